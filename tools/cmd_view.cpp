// SPDX-License-Identifier: MIT
// `shapebias view`: summarise a store or stream, or convert one into the other.
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "common/cli.hpp"
#include "common/endpoints.hpp"
#include "common/provenance.hpp"

namespace shapebias::tools {
namespace {

struct view_options {
  std::string input;
  std::string output;
  std::size_t batch_size = 64;
  bool allow_incomplete = false;
  bool json = false;
};

void print_summary(const io::header& h, std::uint64_t rows, const std::string& what, bool json) {
  if (json) {
    nlohmann::json j{{"format", what}, {"rows", rows}};
    for (const auto& l : h.layers) j["layers"].push_back({{"name", l.name}, {"shape", l.shape}, {"dtype", "float32"}});
    j["provenance"] = nlohmann::json::array();
    for (const auto& r : h.provenance) {
      auto rec = nlohmann::json::parse(r, nullptr, false);
      j["provenance"].push_back(rec.is_discarded() ? nlohmann::json(r) : rec);
    }
    std::cout << j.dump(2) << "\n";
    return;
  }
  std::cout << "format: " << what << "\nrows: " << rows << "\nlayers:\n";
  for (const auto& l : h.layers) {
    std::cout << "  " << l.name << "\tfloat32 [" << rows;
    for (auto d : l.shape) std::cout << ", " << d;
    std::cout << "]\n";
  }
  std::cout << "provenance:\n";
  for (std::size_t i = 0; i < h.provenance.size(); ++i) {
    const auto r = nlohmann::json::parse(h.provenance[i], nullptr, false);
    if (!r.is_object()) {
      std::cout << "  [" << i + 1 << "] (not JSON) " << h.provenance[i] << "\n";
      continue;
    }
    std::cout << "  [" << i + 1 << "] " << r.value("verb", "?") << " id=" << r.value("id", "?")
              << " started=" << r.value("started", "?") << " finished=" << r.value("finished", "-") << "\n"
              << "      " << r.value("argv", "") << "\n";
    if (r.contains("model")) std::cout << "      model: " << r["model"].dump() << "\n";
    if (r.contains("params")) std::cout << "      params: " << r["params"].dump() << "\n";
  }
}

}  // namespace

int run_view(std::span<char*> args) {
  view_options o;
  CLI::App app{"Summarise a store or stream (layers, shapes, rows, provenance), or convert it.\n"
               "An input is recognised by its content; an output ending in .h5 or .hdf5 is an HDF5 store,\n"
               "'-' or any other name a stream.\n\n"
               "Example: shapebias dump m.pt data -l features.0 -o - | shapebias view - -o acts.h5",
               "shapebias view"};
  app.add_option("input", o.input, "Store (.h5) or stream; '-' is standard input [- when stdin is not a terminal]")
      ->group("Input");
  app.add_flag("--allow-incomplete", o.allow_incomplete, "Read a store whose run did not finish")->group("Input");
  app.add_option("-o,--output", o.output, "Convert to this store (.h5) or stream ('-' or a file name)")
      ->group("Output");
  app.add_flag("--json", o.json, "Print the summary as JSON")->group("Output");
  app.add_option("--batch-size", o.batch_size, "Rows per batch when reading a store (a stream keeps its own)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 24))->group("Common")->capture_default_str();
  if (!parse(app, args)) return 0;
  if (o.input.empty()) {
    if (is_terminal(0)) {
      std::cout << app.help();
      return 0;
    }
    o.input = "-";
  }
  if (!o.output.empty()) o.output = stream_output(o.output);

  auto src = open_source(o.input, o.batch_size, o.allow_incomplete);
  if (o.output.empty()) {
    // A stream is read to its verified end; a store knows its row count.
    std::uint64_t rows = 0;
    if (auto n = src->known_rows()) rows = *n;
    else
      while (auto b = src->next()) rows += b->rows();
    print_summary(src->header(), rows, src->format(), o.json);
    return 0;
  }
  io::header out = src->header();
  auto rec = start_record("view", args, out.provenance);
  rec["params"] = {{"input", o.input}, {"output", o.output}, {"batch_size", o.batch_size}};
  out.provenance.push_back(rec.dump());
  try {
    auto sink = open_sink(o.output, out, {}, false);
    while (auto b = src->next()) sink->write(b->view());
    auto log = src->header().provenance;  // a stream's log is complete only at its end
    log.push_back(out.provenance.back());
    sink->finish(&log);
  } catch (...) {
    // A conversion cannot be resumed: leave nothing behind.
    if (is_hdf5_name(o.output)) std::filesystem::remove(o.output + ".partial");
    throw;
  }
  return 0;
}

}  // namespace shapebias::tools
