// SPDX-License-Identifier: MIT
// `shapebias merge`: the outputs of the shards of one run (--shard K/N) combined into the output of
// that run. Folders of tv, dissect, diversity and eval hold their accumulator states and a partial
// record (common/partial.hpp); each verb merges its own (merge_<verb>) and writes its outputs with
// the code of an unsharded run. Stores of dump and attack are merged row by row.
#include <algorithm>
#include <filesystem>
#include <memory>
#include <optional>

#include "common/cli.hpp"
#include "common/endpoints.hpp"
#include "common/merge.hpp"
#include "common/provenance.hpp"
#include "shapebias/io/provenance.hpp"
#include "shapebias/io/store.hpp"

namespace shapebias::tools {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

/// The partial record of a store written by dump, attack or eval (its per-image stores): the shard
/// of the last step that selected inputs, and as key the last step's parameters (but its shard,
/// rows, threads, batch size and resumption), what made the activations, the data set and the layers.
partial_info store_partial(const io::store_reader& r) {
  const auto log = parse_log(r.header().provenance);
  const auto rec = log.empty() ? json() : log.back();
  const std::string verb = rec.is_object() ? rec.value("verb", "") : "";
  if (verb != "dump" && verb != "attack" && verb != "eval")
    throw io_error(quote_name(r.path()) + ": not a store written by dump, attack or eval" +
                   (verb.empty() ? "" : " (its last step is '" + verb + "')"));
  shard s;
  for (auto it = log.rbegin(); it != log.rend(); ++it)
    if (it->is_object() && it->contains("params") && (*it)["params"].contains("shard")) {
      if (const auto& sh = (*it)["params"]["shard"]; sh.is_object()) {
        s.index = sh.at("index");
        s.count = sh.at("count");
      }
      break;
    }
  auto params = rec.value("params", json::object());
  for (const char* k : {"shard", "rows", "threads", "batch_size", "resume", "deflate"}) params.erase(k);
  json layers = json::array();
  for (const auto& l : r.header().layers) layers.push_back({{"name", l.name}, {"shape", l.shape}});
  const json key{{"params", params}, {"source", source_identity(log)}, {"inputs", rec.value("inputs", json())}, {"layers", layers}};
  return partial_info::of(verb, s, key);
}

/// Means over rows and maxima of an attack's summary, from its parts'.
json merged_summary(const std::vector<json>& recs) {
  json out;
  double rows = 0;
  for (const auto& r : recs) {
    if (!r.contains("summary")) return nullptr;
    const double n = r["params"].value("rows", 0.0);
    rows += n;
    for (const auto& [k, v] : r["summary"].items()) {
      const bool max = k.size() > 4 && k.substr(k.size() - 4) == "_max";
      const double x = v.get<double>();
      out[k] = out.contains(k) ? (max ? std::max(out[k].get<double>(), x) : out[k].get<double>() + n * x) : (max ? x : n * x);
    }
  }
  for (auto& [k, v] : out.items())
    if (!(k.size() > 4 && k.substr(k.size() - 4) == "_max")) v = v.get<double>() / rows;
  return out;
}

std::string part_file(const std::string& dir) {
  for (const char* f : {"tv.h5", "dissect.h5", "diversity.h5", "eval.h5"})
    if (fs::exists(fs::path(dir) / f)) return (fs::path(dir) / f).string();
  throw io_error(quote_name(dir) + ": not an output folder of tv, dissect, diversity or eval (it has none of tv.h5, "
                 "dissect.h5, diversity.h5, eval.h5)");
}

}  // namespace

merge_part open_part(io::h5::handle file, const std::string& name) {
  merge_part p;
  p.info = read_partial(file.get(), name);
  if (!io::h5::has_attribute(file.get(), "provenance")) throw io_error(quote_name(name) + ": has no provenance record");
  p.run = json::parse(io::h5::read_string_attribute(file.get(), "provenance", name), nullptr, false).value("run", json());
  p.file = std::move(file);
  p.name = name;
  return p;
}

void merge_parts(const std::vector<merge_part>& parts, const json& step, const std::string& output, bool quiet) {
  std::vector<partial_info> infos;
  std::vector<std::string> names;
  std::vector<json> runs;
  for (const auto& p : parts) {
    infos.push_back(p.info);
    names.push_back(p.name);
    runs.push_back(p.run);
  }
  const auto whole = check_parts(infos, names);
  auto rec = merged_record(runs, step);
  if (whole.verb == "tv") merge_tv(parts, whole, rec, output, quiet);
  else if (whole.verb == "dissect") merge_dissect(parts, whole, rec, output, quiet);
  else if (whole.verb == "diversity") merge_diversity(parts, whole, rec, output, quiet);
  else if (whole.verb == "eval") merge_eval(parts, whole, rec, output, quiet);
  else throw io_error(quote_name(names[0]) + ": a partial result of '" + whole.verb + "', which this version cannot merge");
}

void merge_images(const std::vector<std::string>& images, const json& step, const std::string& output, bool quiet) {
  std::vector<merge_part> parts;
  for (std::size_t r = 0; r < images.size(); ++r) {
    const auto name = "rank " + std::to_string(r);
    parts.push_back(open_part(open_file_image(images[r], name), name));
  }
  merge_parts(parts, step, output, quiet);
}

json mpi_step(const mpi_session& mpi) {
  const auto lib = mpi.library();
  return {{"verb", "mpi"}, {"ranks", mpi.size()}, {"library", lib.substr(0, lib.find_first_of("\n,"))}, {"finished", io::utc_now()}};
}

void merge_stores(const std::vector<std::string>& inputs, const std::string& output, const json& step, bool quiet,
                  bool every_shard) {
  if (!is_hdf5_name(output)) throw usage_error("'" + output + "': stores merge into a store: name it FILE.h5");
  std::vector<std::unique_ptr<io::store_reader>> readers;
  std::vector<partial_info> infos;
  for (const auto& in : inputs) {
    readers.push_back(std::make_unique<io::store_reader>(in));
    infos.push_back(store_partial(*readers.back()));
  }
  const auto whole = check_parts(infos, inputs, every_shard);
  std::vector<std::size_t> order(readers.size());  // parts in shard order
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](auto a, auto b) { return infos[a].shards < infos[b].shards; });
  bool ascending = true;
  std::uint64_t rows = 0;
  for (const auto& r : readers) {
    const auto ids = r->read_batch(0, static_cast<std::size_t>(r->rows()), {}).ids;
    ascending = ascending && std::is_sorted(ids.begin(), ids.end());
    rows += r->rows();
  }
  std::vector<json> recs;
  for (auto i : order) recs.push_back(json::parse(readers[i]->header().provenance.back()));
  auto rec = merged_record(recs, step);
  rec.erase("timing");
  rec["params"]["rows"] = rows;
  rec["params"]["row_order"] = ascending ? "input id (as one run over ids in ascending order)" : "the parts in shard order";
  if (const auto s = merged_summary(recs); !s.is_null()) rec["summary"] = s;
  rec["finished"] = io::utc_now();
  io::header hdr{readers[order[0]]->header().layers, readers[order[0]]->header().provenance};
  hdr.provenance.back() = rec.dump();

  // A k-way merge on input ids (or the parts one after the other), one batch per part in memory.
  constexpr std::size_t batch = 64;
  struct cursor {
    std::unique_ptr<io::store_reader::batches_source> src;
    std::optional<io::batch> b;
    std::size_t row = 0;
  };
  std::vector<cursor> cursors;
  std::vector<std::size_t> every(hdr.layers.size());
  for (std::size_t l = 0; l < every.size(); ++l) every[l] = l;
  for (auto i : order) {
    cursor c{std::make_unique<io::store_reader::batches_source>(*readers[i], batch, every), {}, 0};
    c.b = c.src->next();
    cursors.push_back(std::move(c));
  }
  io::store_options opt;
  opt.batch_rows = batch;
  io::store_writer w(output, hdr, opt);
  std::vector<std::vector<float>> data(hdr.layers.size());
  std::vector<std::int64_t> ids, labels;
  auto flush = [&] {
    io::batch_view v{ids.size(), ids.data(), labels.data(), {}};
    for (const auto& d : data) v.data.push_back(d.data());
    w.write(v);
    ids.clear();
    labels.clear();
    for (auto& d : data) d.clear();
  };
  progress bar("merge", rows, quiet);
  for (std::uint64_t done = 0; done < rows; ++done) {
    cursor* next = nullptr;
    for (auto& c : cursors)
      if (c.b && (!next || (ascending && c.b->ids[c.row] < next->b->ids[next->row]))) {
        next = &c;
        if (!ascending) break;
      }
    const auto& b = *next->b;
    ids.push_back(b.ids[next->row]);
    labels.push_back(b.labels[next->row]);
    for (std::size_t l = 0; l < data.size(); ++l) {
      const std::size_t n = hdr.layers[l].row_size();
      const float* x = b.data[l].data() + next->row * n;
      data[l].insert(data[l].end(), x, x + n);
    }
    if (++next->row == b.rows()) {
      next->b = next->src->next();
      next->row = 0;
    }
    if (ids.size() == batch) flush();
    bar.update(done + 1);
  }
  if (!ids.empty()) flush();
  bar.finish();
  w.finish();
  if (!quiet)
    std::fprintf(stderr, "merge: %llu rows of %zu %s shards; wrote %s\n", static_cast<unsigned long long>(rows), inputs.size(),
                 whole.verb.c_str(), output.c_str());
}

void run_ranks(const std::string& output, bool folder, bool quiet,
               const std::function<void(const std::string& shard, const std::string& part)>& run) {
  if (!folder && !is_hdf5_name(output))
    throw usage_error("--mpi: give -o FILE.h5 (the ranks write stores that rank 0 merges; a stream cannot be shared)");
  mpi_session mpi;
  const fs::path out = fs::path(output).lexically_normal();
  const std::string stem = folder ? out.string() : (out.parent_path() / out.stem()).string();
  std::vector<std::string> parts;
  for (int r = 0; r < mpi.size(); ++r)
    parts.push_back(stem + ".rank" + std::to_string(r) + "-of-" + std::to_string(mpi.size()) + (folder ? "" : out.extension().string()));
  auto remove_parts = [&] {
    std::error_code ec;
    for (const auto& p : parts) fs::remove_all(p, ec);
  };
  try {
    mpi.gather([&] {
      run(mpi.shard(), parts[static_cast<std::size_t>(mpi.rank())]);
      return std::string();
    });
    if (!mpi.root()) return;
    if (folder) {
      std::vector<merge_part> opened;
      io::h5::quiet();
      for (const auto& p : parts) {
        const auto file = part_file(p);
        io::h5::handle h(io::h5::check(H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), file, "cannot open"));
        opened.push_back(open_part(std::move(h), file));
      }
      merge_parts(opened, mpi_step(mpi), output, quiet);
    } else {
      merge_stores(parts, output, mpi_step(mpi), quiet);
    }
  } catch (...) {
    if (mpi.root()) remove_parts();  // every rank is past writing its part
    throw;
  }
  remove_parts();
}

int run_merge(std::span<char*> args) {
  std::string output;
  std::vector<std::string> inputs;
  common_options common;
  CLI::App app{
      "Combine the outputs of the shards of one run (--shard K/N, K = 0 … N-1) into the output that run would\n"
      "have written unsharded: counts exactly, floating sums and sketches within their stated tolerance\n"
      "(docs/scale-out.md). Output folders of tv, dissect, diversity and eval merge into a folder; stores of\n"
      "dump and attack into a store. Refuses parts that differ in parameters, models, layers or inputs, and\n"
      "a shard given twice or missing.\n\n"
      "Examples:\n"
      "  shapebias merge tv/ tv.0/ tv.1/ tv.2/ tv.3/\n"
      "  shapebias merge acts.h5 acts.0.h5 acts.1.h5",
      "shapebias merge"};
  app.add_option("output", output, "The merged output: a folder, or FILE.h5 for stores")->required()->group("Output");
  app.add_option("inputs", inputs, "The shards' outputs: folders (tv, dissect, diversity, eval) or stores (dump, attack)")
      ->required()->group("Input");
  add_common_options(app, common, opt_quiet);
  if (!parse(app, args)) return 0;
  const auto step = start_record("merge", args);
  std::size_t folders = 0;
  for (const auto& in : inputs) {
    std::error_code ec;
    if (!fs::exists(in, ec)) throw io_error(quote_name(in) + ": no such file or folder");
    folders += fs::is_directory(in, ec);
  }
  if (folders != 0 && folders != inputs.size())
    throw usage_error("give either output folders (tv, dissect, diversity, eval) or stores (dump, attack), not both");
  if (!folders) {
    merge_stores(inputs, output, step, common.quiet);
    return 0;
  }
  std::vector<merge_part> parts;
  for (const auto& in : inputs) {
    const auto file = part_file(in);
    io::h5::quiet();
    io::h5::handle h(io::h5::check(H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), file, "cannot open"));
    parts.push_back(open_part(std::move(h), file));
  }
  merge_parts(parts, step, output, common.quiet);
  return 0;
}

}  // namespace shapebias::tools
