// SPDX-License-Identifier: MIT
// `shapebias report RESULTS`: an HTML page of a results folder (the layout `shapebias demo` writes):
// Vega-Lite charts with their data inline, rendered by vega-embed from copies of the libraries
// next to the page, so it opens offline. The paper's claims are stated as what was measured here.
// A section whose folder is missing is reported as absent; a malformed file is an error.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/child.hpp"
#include "common/cli.hpp"
#include "common/csv.hpp"
#include "common/dataset.hpp"
#include "common/output_folder.hpp"
#include "common/provenance.hpp"
#include "shapebias/io/provenance.hpp"
#include "shapebias/io/store.hpp"

namespace shapebias::tools {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

struct report_options {
  common_options common;
  std::string results, output;
  std::size_t examples = 6;
};

// ---------------------------------------------------------------------------------------------
// Reading the results

/// A results CSV: cells as text, numbers (an empty cell is "no value": null) or flags.
class results_table {
 public:
  explicit results_table(const std::string& path) : t_(read_csv(path)) {}
  std::size_t rows() const { return t_.rows.size(); }
  bool has(const std::string& col) const { return std::find(t_.header.begin(), t_.header.end(), col) != t_.header.end(); }
  const std::vector<std::string>& header() const { return t_.header; }
  const std::string& text(std::size_t r, const std::string& col) const { return t_.rows[r][t_.column(col)]; }
  /// The cell as a number, NaN when empty. Throws io_error naming the file, line and column.
  double value(std::size_t r, const std::string& col) const {
    const auto& s = text(r, col);
    if (s.empty()) return std::nan("");
    double v = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end != s.data() + s.size())
      throw io_error(t_.where(r) + ": column '" + col + "': '" + s + "' is not a number");
    return v;
  }
  json number(std::size_t r, const std::string& col) const {
    const double v = value(r, col);
    return std::isnan(v) ? json(nullptr) : json(v);
  }
  bool flag(std::size_t r, const std::string& col) const {
    const auto& s = text(r, col);
    if (s == "1" || s == "true") return true;
    if (s == "0" || s == "false") return false;
    throw io_error(t_.where(r) + ": column '" + col + "': '" + s + "' is not 0 or 1");
  }

 private:
  csv_table t_;
};

enum class cell { text, number, flag };

/// The rows of a table as JSON records with the given columns (the charts' inline data).
json records(const results_table& t, std::initializer_list<std::pair<const char*, cell>> cols) {
  json out = json::array();
  for (std::size_t r = 0; r < t.rows(); ++r) {
    json o;
    for (const auto& [c, k] : cols)
      o[c] = k == cell::text ? json(t.text(r, c)) : k == cell::number ? t.number(r, c) : json(t.flag(r, c));
    out.push_back(std::move(o));
  }
  return out;
}

json read_json(const fs::path& p) {
  std::ifstream in(p);
  if (!in) throw io_error(quote_name(p.string()) + ": cannot open");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    throw io_error(quote_name(p.string()) + ": not valid JSON (" + e.what() + ")");
  }
}

/// The distinct values of a text column, in order of first appearance (network and layer axes).
std::vector<std::string> distinct(const results_table& t, const std::string& col) {
  std::vector<std::string> out;
  for (std::size_t r = 0; r < t.rows(); ++r)
    if (std::find(out.begin(), out.end(), t.text(r, col)) == out.end()) out.push_back(t.text(r, col));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Writing the page

std::string esc(const std::string& s) {
  std::string out;
  for (char c : s) switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  return out;
}

std::string num(double v, const char* fmt = "%.3g") {
  if (std::isnan(v)) return "n/a";
  char b[48];
  std::snprintf(b, sizeof b, fmt, v);
  return b;
}
std::string pct(double v) { return std::isnan(v) ? "n/a" : num(100 * v, "%.1f") + "%"; }

/// The same colour for a network in every chart: the first network blue, the second red.
json network_color(const std::vector<std::string>& networks) {
  static const char* palette[] = {"#4c78a8", "#e45756", "#54a24b", "#b279a2", "#f58518", "#72b7b2"};
  json range = json::array();
  for (std::size_t i = 0; i < networks.size(); ++i) range.push_back(palette[i % 6]);
  return {{"field", "network"}, {"type", "nominal"}, {"title", "network"}, {"scale", {{"domain", networks}, {"range", range}}}};
}

/// A claim of the paper and what this run measured for it.
struct claim {
  std::string section, statement, measured, verdict;  // verdict: agrees, does not agree, no difference, not measured
};

/// "agrees" when the measured order of S and R is the claimed one (R above S when r_higher).
std::string verdict(double s, double r, bool r_higher) {
  if (std::isnan(s) || std::isnan(r)) return "not measured";
  if (s == r) return "no difference";
  return (r > s) == r_higher ? "agrees" : "does not agree";
}

class page {
 public:
  void section(const std::string& id, const std::string& title, const std::string& intro) {
    toc_.push_back({id, title});
    body_ << "<section id=\"" << id << "\">\n<h2>" << esc(title) << "</h2>\n<p class=\"intro\">" << intro << "</p>\n";
  }
  void end_section() { body_ << "</section>\n"; }
  void html(const std::string& h) { body_ << h << "\n"; }
  /// A chart: a container that vega-embed fills, its Vega-Lite spec as inline JSON, a caption.
  void chart(const std::string& id, json spec, const std::string& caption) {
    spec["$schema"] = "https://vega.github.io/schema/vega-lite/v6.json";
    std::string text = spec.dump();
    for (std::size_t p = 0; (p = text.find("</", p)) != std::string::npos; p += 3) text.replace(p, 2, "<\\/");
    body_ << "<figure>\n<div class=\"chart\" id=\"chart-" << id << "\" data-spec=\"spec-" << id << "\"></div>\n"
          << "<script type=\"application/json\" id=\"spec-" << id << "\">" << text << "</script>\n<figcaption>" << caption
          << "</figcaption>\n</figure>\n";
    ++charts_;
  }
  void absent(const std::string& what, const std::string& why) {
    body_ << "<p class=\"absent\"><strong>Absent:</strong> " << esc(what) << ": " << esc(why) << "</p>\n";
    ++absent_;
  }
  /// "How this was made": the commands (and versions) behind a section's figures.
  void provenance(const std::vector<std::pair<std::string, json>>& recs) {
    body_ << "<details class=\"provenance\"><summary>How these figures were made</summary>\n<dl>\n";
    for (const auto& [what, r] : recs) {
      body_ << "<dt>" << esc(what) << "</dt><dd><code>" << esc(r.value("argv", std::string("(no command recorded)")))
            << "</code>";
      std::string meta;
      if (r.contains("version")) meta += "shapebias " + r["version"].dump();
      if (r.contains("started")) meta += ", started " + r.value("started", std::string());
      if (r.contains("finished")) meta += ", finished " + r.value("finished", std::string());
      if (r.contains("host")) meta += " on " + r.value("host", std::string());
      if (!meta.empty()) body_ << "<br><span class=\"meta\">" << esc(meta) << "</span>";
      body_ << "</dd>\n";
    }
    body_ << "</dl></details>\n";
  }
  std::string toc() const {
    std::string s = "<nav><ul>";
    for (const auto& [id, title] : toc_) s += "<li><a href=\"#" + id + "\">" + esc(title) + "</a></li>";
    return s + "</ul></nav>\n";
  }
  std::string body() const { return body_.str(); }
  int charts() const { return charts_; }
  int absent_count() const { return absent_; }

 private:
  std::ostringstream body_;
  std::vector<std::pair<std::string, std::string>> toc_;
  int charts_ = 0, absent_ = 0;
};

/// What the report reads and writes: the results folder, the page, the claims, the inputs' hashes.
struct context {
  fs::path results;
  const output_folder& out;
  const report_options& o;
  page pg;
  std::vector<claim> claims;
  json inputs = json::array();

  /// A file of the results, recorded with its sha256 in the report's provenance.
  std::string file(const std::string& rel) {
    const auto p = (results / rel).string();
    inputs.push_back({{"path", rel}, {"sha256", sha256_file(p)}});
    return p;
  }
  /// Whether a step's folder holds a finished output (its provenance.json); otherwise says why not.
  bool present(const std::string& dir, const std::string& what, const std::string& made_by) {
    if (fs::exists(results / dir / "provenance.json")) return true;
    std::string why = fs::exists(results / dir) ? dir + "/ has no provenance.json (not a finished shapebias output)"
                                                : "no " + dir + "/ in " + results.string();
    if (fs::exists(results / (dir + ".partial"))) why += "; " + dir + ".partial/ is an unfinished run";
    pg.absent(what, why + " (made by: " + made_by + ")");
    return false;
  }
  void not_measured(const std::string& section, const std::string& statement) {
    claims.push_back({section, statement, "—", "not measured"});
  }
};

// ---------------------------------------------------------------------------------------------
// The sections

void overview(context& c, const json& demo) {
  c.pg.section("overview", "The run", "What was run, with which sizes, and how long each step took.");
  if (demo.is_null()) {
    c.pg.html("<p>No <code>demo.json</code>: the folders below were made by separate commands (each section says which).</p>");
  } else {
    const auto& p = demo.value("params", json::object());
    std::string h = "<p>Made by <code>" + esc(demo.value("argv", std::string("shapebias demo"))) + "</code>";
    if (p.contains("preset")) h += ", preset <strong>" + esc(p["preset"].get<std::string>()) + "</strong>";
    if (p.contains("data")) h += ", data " + esc(p["data"].get<std::string>());
    h += ".</p>\n";
    if (p.contains("sizes") && p["sizes"].is_object()) {
      h += "<table class=\"small\"><tr><th>size</th><th>value</th></tr>";
      for (const auto& [k, v] : p["sizes"].items()) h += "<tr><td>" + esc(k) + "</td><td>" + esc(v.dump()) + "</td></tr>";
      h += "</table>\n";
    }
    if (p.contains("steps") && p["steps"].is_array()) {
      h += "<details><summary>Steps, timings and commands</summary><table class=\"small\"><tr><th>step</th><th>seconds</th>"
           "<th>command</th></tr>";
      for (const auto& s : p["steps"])
        h += "<tr><td>" + esc(s.value("step", std::string())) + "</td><td>" +
             (s.contains("seconds") ? num(s["seconds"].get<double>(), "%.1f") : "skipped") + "</td><td><code>" +
             esc(s.contains("command") ? s.value("command", std::string()) : s.value("skipped", std::string())) +
             "</code></td></tr>";
      h += "</table></details>\n";
    }
    c.pg.html(h);
  }
  c.pg.end_section();
}

void training(context& c) {
  c.pg.section("training", "The S and R networks",
               "Training curves: accuracy on held-out data after each epoch, clean and under the training attack (PGD).");
  std::vector<std::string> nets;
  if (fs::is_directory(c.results / "models"))
    for (const auto& e : fs::directory_iterator(c.results / "models"))
      if (fs::exists(e.path() / "log.csv")) nets.push_back(e.path().filename().string());
  std::sort(nets.begin(), nets.end(), [](const auto& a, const auto& b) {
    auto rank = [](const std::string& n) { return n == "S" ? 0 : n == "R" ? 1 : 2; };
    return std::pair(rank(a), a) < std::pair(rank(b), b);
  });
  if (nets.empty()) {
    c.pg.absent("training logs", "no models/*/log.csv in " + c.results.string() + " (made by: shapebias train -o models/S)");
    c.pg.end_section();
    return;
  }
  json data = json::array();
  std::vector<std::pair<std::string, json>> prov;
  for (const auto& n : nets) {
    const results_table t(c.file("models/" + n + "/log.csv"));
    for (std::size_t r = 0; r < t.rows(); ++r)
      for (const char* m : {"clean_accuracy", "robust_accuracy"})
        data.push_back({{"network", n}, {"epoch", t.number(r, "epoch")}, {"measure", m}, {"accuracy", t.number(r, m)}});
    if (fs::exists(c.results / "models" / n / "train.h5")) {
      const io::store_reader s(c.file("models/" + n + "/train.h5"));
      const auto log = parse_log(s.header().provenance);
      prov.push_back({"train " + n, log.empty() ? json::object() : log.back()});
    }
  }
  json spec = {{"data", {{"values", data}}},
               {"width", 360},
               {"height", 220},
               {"mark", {{"type", "line"}, {"point", true}, {"tooltip", true}}},
               {"encoding",
                {{"x", {{"field", "epoch"}, {"type", "quantitative"}, {"axis", {{"tickMinStep", 1}, {"format", "d"}}}}},
                 {"y", {{"field", "accuracy"}, {"type", "quantitative"}, {"scale", {{"domain", {0, 1}}}}}},
                 {"color", network_color(nets)},
                 {"strokeDash", {{"field", "measure"}, {"type", "nominal"}, {"legend", nullptr}}},
                 {"shape", {{"field", "measure"}, {"type", "nominal"}}}}}};
  c.pg.chart("training", spec,
             "Held-out accuracy per epoch (<code>models/*/log.csv</code>): clean (circles, solid) and under PGD "
             "(squares, dashed).");
  c.pg.provenance(prov);
  c.pg.end_section();
}

/// The expected direction of a variant (paper-spec §2.2), from its spec: R more accurate on
/// shape-preserving sets and noise, S on scrambled patches. Empty: no claim for this variant.
std::pair<std::string, bool> variant_claim(const std::string& name, const std::string& spec) {
  if (spec.rfind("noise:", 0) == 0) return {"R is more accurate than S on Gaussian noise", true};
  if (spec.rfind("scramble:", 0) == 0) return {"S is more accurate than R on scrambled patches (texture kept, shape destroyed)", false};
  if (spec.rfind("edges", 0) == 0) return {"R is more accurate than S on edge maps (shape kept, texture removed)", true};
  if (spec.rfind("silhouette", 0) == 0) return {"R is more accurate than S on silhouettes (shape kept, texture removed)", true};
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char ch) { return std::tolower(ch); });
  if (spec.rfind("folder:", 0) == 0 && lower.find("styl") != std::string::npos)
    return {"R is more accurate than S on stylized images (shape kept, texture replaced)", true};
  return {"", false};
}

void shape_bias(context& c) {
  const std::string sec = "Shape bias";
  c.pg.section("shape", sec,
               "Top-1 accuracy on the CL set (the inputs every network classifies correctly, so both start at 100%) "
               "and on its variants. Higher accuracy on a shape-preserving variant means more reliance on shape.");
  if (!c.present("eval", "accuracy on variants", "shapebias eval S.pt R.pt DATA --variant NAME=SPEC -o eval")) {
    c.not_measured(sec, "R relies more on shape than S (variant accuracy)");
    c.pg.end_section();
    return;
  }
  const json prov = read_json(c.file("eval/provenance.json"));
  const results_table t(c.file("eval/accuracy.csv"));
  std::vector<std::string> nets;
  for (const auto& h : t.header())
    if (h.rfind("top1_", 0) == 0) nets.push_back(h.substr(5));
  if (nets.empty()) throw io_error(quote_name((c.results / "eval/accuracy.csv").string()) + ": no top1_<network> column");
  std::map<std::string, std::string> specs;
  for (const auto& v : prov.value("params", json::object()).value("variants", json::array()))
    if (v.is_string()) {
      const auto s = v.get<std::string>();
      if (const auto eq = s.find('='); eq != std::string::npos) specs[s.substr(0, eq)] = s.substr(eq + 1);
    }
  json data = json::array();
  std::vector<std::string> order;
  for (std::size_t r = 0; r < t.rows(); ++r) {
    const auto& v = t.text(r, "variant");
    order.push_back(v);
    for (const auto& n : nets)
      data.push_back({{"variant", v}, {"inputs", t.number(r, "inputs")}, {"network", n}, {"top1", t.number(r, "top1_" + n)}});
    if (nets.size() < 2) continue;
    const auto [statement, r_higher] = variant_claim(v, specs.count(v) ? specs[v] : "");
    if (statement.empty()) continue;
    const double s = t.value(r, "top1_" + nets[0]), rr = t.value(r, "top1_" + nets[1]);
    c.claims.push_back({sec, statement,
                        nets[0] + " " + pct(s) + ", " + nets[1] + " " + pct(rr) + " on " + v + " (" +
                            num(t.value(r, "inputs"), "%.0f") + " CL inputs)",
                        verdict(s, rr, r_higher)});
  }
  json spec = {{"data", {{"values", data}}},
               {"width", {{"step", 22}}},
               {"height", 240},
               {"mark", {{"type", "bar"}, {"tooltip", true}}},
               {"encoding",
                {{"x", {{"field", "variant"}, {"type", "nominal"}, {"sort", order}, {"axis", {{"labelAngle", -30}}}}},
                 {"xOffset", {{"field", "network"}, {"sort", nets}}},
                 {"y", {{"field", "top1"}, {"type", "quantitative"}, {"title", "top-1 accuracy"}, {"scale", {{"domain", {0, 1}}}}}},
                 {"color", network_color(nets)}}}};
  c.pg.chart("accuracy", spec,
             "Top-1 accuracy per variant (<code>eval/accuracy.csv</code>). \"clean (all inputs)\" is the whole evaluated set; "
             "every other row is on the CL set.");
  if (fs::exists(c.results / "eval/shape_bias.csv")) {
    const results_table sb(c.file("eval/shape_bias.csv"));
    json d = json::array();
    std::map<std::string, double> all;
    for (std::size_t r = 0; r < sb.rows(); ++r) {
      d.push_back({{"network", sb.text(r, "model")}, {"category", sb.text(r, "category")}, {"shape_bias", sb.number(r, "shape_bias")}});
      if (sb.text(r, "category") == "all") all[sb.text(r, "model")] = sb.value(r, "shape_bias");
    }
    const auto models = distinct(sb, "model");
    c.pg.chart("cue-conflict",
               {{"data", {{"values", d}}},
                {"width", {{"step", 14}}},
                {"height", 200},
                {"mark", {{"type", "bar"}, {"tooltip", true}}},
                {"encoding",
                 {{"x", {{"field", "category"}, {"type", "nominal"}}},
                  {"xOffset", {{"field", "network"}}},
                  {"y", {{"field", "shape_bias"}, {"type", "quantitative"}, {"title", "shape bias"}, {"scale", {{"domain", {0, 1}}}}}},
                  {"color", network_color(models)}}}},
               "Cue-conflict shape bias: shape decisions / (shape + texture decisions), per shape category "
               "(<code>eval/shape_bias.csv</code>).");
    if (models.size() >= 2 && all.count(models[0]) && all.count(models[1]))
      c.claims.push_back({sec, "R has a higher cue-conflict shape bias than S",
                          models[0] + " " + pct(all[models[0]]) + ", " + models[1] + " " + pct(all[models[1]]),
                          verdict(all[models[0]], all[models[1]], true)});
  }
  c.pg.provenance({{"eval", prov}});
  c.pg.end_section();
}

void smoothness(context& c) {
  const std::string sec = "Smoothness";
  c.pg.section("smoothness", sec,
               "Total variation (TV, the sum of absolute differences between neighbouring values) of the convolution "
               "filters, and of each channel's activation maps on clean and on noisy copies of the same images.");
  // Filters.
  c.pg.html("<h3>Filters</h3>");
  if (c.present("tv-filters", "filter TV", "shapebias tv --weights S.pt R.pt -o tv-filters")) {
    const json prov = read_json(c.file("tv-filters/provenance.json"));
    const results_table t(c.file("tv-filters/filters.csv"));
    std::vector<std::string> nets;
    for (const auto& h : t.header())
      if (h.rfind("mean_tv_", 0) == 0) nets.push_back(h.substr(8));
    json data = json::array();
    std::vector<std::string> layers;
    std::map<std::string, double> network_tv;
    for (std::size_t r = 0; r < t.rows(); ++r) {
      const auto& l = t.text(r, "layer");
      if (l == "network") {
        for (const auto& n : nets) network_tv[n] = t.value(r, "mean_tv_" + n);
        continue;
      }
      layers.push_back(l);
      for (const auto& n : nets) {
        json row{{"layer", l}, {"network", n}, {"channels", t.number(r, "channels")}, {"kernel", t.text(r, "kernel")},
                 {"mean_tv", t.number(r, "mean_tv_" + n)}, {"sd_tv", t.number(r, "sd_tv_" + n)}};
        if (t.has("hf_fraction_" + n)) row["hf_fraction"] = t.number(r, "hf_fraction_" + n);
        data.push_back(row);
      }
    }
    auto panel = [&](const char* field, const char* title) {
      return json{{"width", {{"step", 24}}},
                  {"height", 200},
                  {"mark", {{"type", "bar"}, {"tooltip", true}}},
                  {"encoding",
                   {{"x", {{"field", "layer"}, {"type", "nominal"}, {"sort", layers}}},
                    {"xOffset", {{"field", "network"}, {"sort", nets}}},
                    {"y", {{"field", field}, {"type", "quantitative"}, {"title", title}}},
                    {"color", network_color(nets)}}}};
    };
    json spec = {{"data", {{"values", data}}}, {"hconcat", {panel("mean_tv", "mean filter TV")}}};
    if (t.has("hf_fraction_" + nets.at(0))) spec["hconcat"].push_back(panel("hf_fraction", "high-frequency power fraction"));
    c.pg.chart("filter-tv", spec,
               "Mean TV of each layer's filters (TV of every input-channel kernel, summed), and the fraction of their "
               "power above the cut-off frequency (<code>tv-filters/filters.csv</code>). Lower is smoother.");
    if (nets.size() >= 2)
      c.claims.push_back({sec, "R's filters are smoother than S's (lower mean filter TV, channel-weighted over layers)",
                          nets[0] + " " + num(network_tv[nets[0]], "%.4g") + ", " + nets[1] + " " + num(network_tv[nets[1]], "%.4g"),
                          verdict(network_tv[nets[0]], network_tv[nets[1]], false)});
    c.pg.provenance({{"filter TV", prov}});
  } else {
    c.not_measured(sec, "R's filters are smoother than S's (lower mean filter TV)");
  }
  // Activation maps, clean vs noisy.
  c.pg.html("<h3>Activation maps, clean vs noisy</h3>");
  if (c.present("tv", "activation TV, clean vs noisy", "shapebias tv S.pt R.pt --data DATA --noise 0.1 -l LAYERS -o tv")) {
    const json prov = read_json(c.file("tv/provenance.json"));
    const results_table ch(c.file("tv/channels.csv")), ly(c.file("tv/layers.csv"));
    c.file("tv/flagged.csv");  // recorded: the flags come from channels.csv
    const auto nets = distinct(ch, "network"), layers = distinct(ch, "layer");
    const json data = records(ch, {{"network", cell::text}, {"layer", cell::text}, {"channel", cell::number},
                                   {"tv_clean", cell::number}, {"tv_noisy", cell::number}, {"difference", cell::number},
                                   {"flagged", cell::flag}});
    const json tooltip = json::array({{{"field", "network"}}, {{"field", "layer"}}, {{"field", "channel"}},
                                      {{"field", "tv_clean"}, {"format", ".4g"}}, {{"field", "tv_noisy"}, {"format", ".4g"}},
                                      {{"field", "difference"}, {"format", ".4g"}}, {{"field", "flagged"}}});
    json points = {{"mark", {{"type", "point"}, {"filled", true}}},
                   {"encoding",
                    {{"x", {{"field", "tv_clean"}, {"type", "quantitative"}, {"title", "TV clean"}}},
                     {"y", {{"field", "tv_noisy"}, {"type", "quantitative"}, {"title", "TV noisy"}}},
                     {"color", network_color(nets)},
                     {"shape", {{"field", "flagged"}, {"type", "nominal"}, {"title", "flagged"},
                                {"scale", {{"domain", {false, true}}, {"range", {"circle", "triangle-up"}}}}}},
                     {"size", {{"condition", {{"test", "datum.flagged"}, {"value", 70}}}, {"value", 22}}},
                     {"opacity", {{"condition", {{"test", "datum.flagged"}, {"value", 1}}}, {"value", 0.55}}},
                     {"tooltip", tooltip}}}};
    // The identity line from the smallest to the largest TV of the layer.
    json identity = {{"transform", {{{"calculate", "min(datum.tv_clean, datum.tv_noisy)"}, {"as", "lo"}},
                                    {{"calculate", "max(datum.tv_clean, datum.tv_noisy)"}, {"as", "hi"}},
                                    {{"aggregate", {{{"op", "min"}, {"field", "lo"}, {"as", "lo"}}, {{"op", "max"}, {"field", "hi"}, {"as", "hi"}}}},
                                     {"groupby", {"layer"}}}}},
                     {"mark", {{"type", "rule"}, {"color", "#888"}, {"strokeDash", {4, 4}}}},
                     {"encoding",
                      {{"x", {{"field", "lo"}, {"type", "quantitative"}}},
                       {"y", {{"field", "lo"}, {"type", "quantitative"}}},
                       {"x2", {{"field", "hi"}}},
                       {"y2", {{"field", "hi"}}}}}};
    json spec = {{"data", {{"values", data}}},
                 {"facet", {{"field", "layer"}, {"type", "nominal"}, {"sort", layers}, {"title", nullptr}}},
                 {"columns", 3},
                 {"spec", {{"width", 240}, {"height", 240}, {"layer", {identity, points}}}},
                 {"resolve", {{"scale", {{"x", "independent"}, {"y", "independent"}}}}}};
    c.pg.chart("tv-scatter", spec,
               "Each point is a channel: its mean activation-map TV on clean images (x) and on noisy copies (y) "
               "(<code>tv/channels.csv</code>). Points above the dashed identity line let noise through. Triangles are the "
               "flagged channels, |TV noisy − TV clean| ≥ τ with τ = 0.2 × S's mean clean TV of the layer; hover a point for "
               "its channel.");
    std::map<std::string, double> flagged, channels;
    std::string per_layer;
    for (std::size_t r = 0; r < ly.rows(); ++r) {
      const auto& n = ly.text(r, "network");
      flagged[n] += ly.value(r, "flagged");
      channels[n] += ly.value(r, "channels");
      per_layer += "<tr><td>" + esc(ly.text(r, "layer")) + "</td><td>" + esc(n) + "</td><td>" + num(ly.value(r, "tv_clean")) +
                   "</td><td>" + num(ly.value(r, "tv_noisy")) + "</td><td>" + num(ly.value(r, "tau")) + "</td><td>" +
                   num(ly.value(r, "flagged"), "%.0f") + " / " + num(ly.value(r, "channels"), "%.0f") + "</td></tr>";
    }
    c.pg.html("<table class=\"small\"><tr><th>layer</th><th>network</th><th>mean TV clean</th><th>mean TV noisy</th><th>τ</th>"
              "<th>flagged</th></tr>" + per_layer + "</table>");
    if (nets.size() >= 2)
      c.claims.push_back({sec, "Noise passes less through R's channels: fewer R channels are flagged (|TV noisy − TV clean| ≥ τ)",
                          nets[0] + " " + num(flagged[nets[0]], "%.0f") + " of " + num(channels[nets[0]], "%.0f") + ", " + nets[1] +
                              " " + num(flagged[nets[1]], "%.0f") + " of " + num(channels[nets[1]], "%.0f") + " channels flagged",
                          verdict(flagged[nets[0]], flagged[nets[1]], false)});
    c.pg.provenance({{"activation TV", prov}});
  } else {
    c.not_measured(sec, "Noise passes less through R's channels (activation TV, clean vs noisy)");
  }
  c.pg.end_section();
}

void dissection(context& c) {
  const std::string sec = "Dissection";
  c.pg.section("dissection", "Network dissection",
               "Units labelled by the probe-set concept whose segmentation their top activations overlap best (IoU). "
               "A detector is a unit whose best IoU reaches the threshold; choose the threshold below the chart.");
  if (!c.present("dissect", "network dissection", "shapebias dissect S.pt R.pt --probe PROBE -l LAYERS -o dissect")) {
    c.not_measured(sec, "R has more colour and texture detectors than S");
    c.not_measured(sec, "R has fewer object, part and scene detectors than S");
    c.pg.end_section();
    return;
  }
  const json prov = read_json(c.file("dissect/provenance.json"));
  const results_table t(c.file("dissect/layers.csv"));
  const auto nets = distinct(t, "network"), layers = distinct(t, "layer");
  json data = json::array();
  std::vector<double> thresholds;
  std::vector<std::string> cats;
  for (std::size_t r = 0; r < t.rows(); ++r) {
    const auto& cat = t.text(r, "category");
    const double th = t.value(r, "iou_threshold");
    if (std::find(thresholds.begin(), thresholds.end(), th) == thresholds.end()) thresholds.push_back(th);
    if (cat == "(all)") continue;
    if (std::find(cats.begin(), cats.end(), cat) == cats.end()) cats.push_back(cat);
    data.push_back({{"network", t.text(r, "network")}, {"layer", t.text(r, "layer")}, {"iou_threshold", th}, {"category", cat},
                    {"units", t.number(r, "units")}, {"detectors", t.number(r, "detectors")}, {"mean_iou", t.number(r, "mean_iou")},
                    {"unique_concepts", t.number(r, "unique_concepts")}});
  }
  if (thresholds.empty()) throw io_error(quote_name((c.results / "dissect/layers.csv").string()) + ": no rows");
  // The NetDissect convention, 0.04, when it was computed; else the first threshold.
  const double th0 = std::find(thresholds.begin(), thresholds.end(), 0.04) != thresholds.end() ? 0.04 : thresholds[0];
  json spec = {{"data", {{"values", data}}},
               {"params", {{{"name", "threshold"}, {"value", th0},
                            {"bind", {{"input", "select"}, {"options", thresholds}, {"name", "IoU threshold "}}}}}},
               {"transform", {{{"filter", "datum.iou_threshold == threshold"}}}},
               {"facet", {{"field", "layer"}, {"type", "nominal"}, {"sort", layers}, {"title", nullptr}}},
               {"spec",
                {{"width", {{"step", 16}}},
                 {"height", 200},
                 {"mark", {{"type", "bar"}, {"tooltip", true}}},
                 {"encoding",
                  {{"x", {{"field", "category"}, {"type", "nominal"}, {"sort", cats}}},
                   {"xOffset", {{"field", "network"}, {"sort", nets}}},
                   {"y", {{"field", "detectors"}, {"type", "quantitative"}, {"title", "detector units"}}},
                   {"color", network_color(nets)}}}}}};
  c.pg.chart("dissect-categories", spec,
             "Detector units per concept category and layer, S vs R (<code>dissect/layers.csv</code>); hover a bar for the "
             "units, mean IoU and unique concepts.");
  if (nets.size() >= 2) {
    auto count = [&](const std::string& net, std::initializer_list<const char*> which) {
      double s = 0;
      bool any = false;
      for (std::size_t r = 0; r < t.rows(); ++r)
        for (const char* w : which)
          if (t.text(r, "network") == net && t.text(r, "category") == w && t.value(r, "iou_threshold") == th0) {
            s += t.value(r, "detectors");
            any = true;
          }
      return any ? s : std::nan("");
    };
    auto add = [&](const std::string& statement, std::initializer_list<const char*> which, bool r_higher) {
      const double s = count(nets[0], which), r = count(nets[1], which);
      c.claims.push_back({sec, statement,
                          std::isnan(s) ? "the probe set has none of these categories"
                                        : nets[0] + " " + num(s, "%.0f") + ", " + nets[1] + " " + num(r, "%.0f") +
                                              " detectors over all layers at IoU ≥ " + num(th0, "%g"),
                          verdict(s, r, r_higher)});
    };
    add("R has more colour and texture detectors than S", {"color", "texture"}, true);
    add("R has fewer object, part and scene detectors than S", {"object", "part", "scene"}, false);
  }
  c.pg.provenance({{"dissect", prov}});
  c.pg.end_section();
}

void diversity(context& c) {
  const std::string sec = "Diversity";
  c.pg.section("diversity", "Diversity of the inputs units respond to",
               "For every unit, its top-K inputs and how diverse they are: distinct labels and label entropy, spread in "
               "a fixed embedding, facets (clusters). <strong>Paper metric unconfirmed</strong>: the paper's definition "
               "could not be recovered, so these are the measures of its §5 family.");
  if (!c.present("diversity", "diversity", "shapebias diversity S.pt R.pt --data DATA -l LAYERS --grids 4 -o diversity")) {
    c.not_measured(sec, "R's units respond to fewer types of inputs than S's");
    c.pg.end_section();
    return;
  }
  const json prov = read_json(c.file("diversity/provenance.json"));
  const results_table t(c.file("diversity/units.csv"));
  const auto nets = distinct(t, "network"), layers = distinct(t, "layer");
  const json data = records(t, {{"network", cell::text}, {"layer", cell::text}, {"unit", cell::number}, {"dead", cell::flag},
                                {"distinct_labels", cell::number}, {"label_entropy", cell::number},
                                {"mean_cosine_distance", cell::number}, {"facets", cell::number}, {"fraction_above", cell::number}});
  json spec = {{"data", {{"values", data}}},
               {"transform", {{{"filter", "!datum.dead"}}}},
               {"repeat", {"distinct_labels", "label_entropy", "mean_cosine_distance", "facets", "fraction_above"}},
               {"columns", 3},
               {"spec",
                {{"width", {{"step", 36}}},
                 {"height", 180},
                 {"mark", {{"type", "boxplot"}, {"extent", 1.5}}},
                 {"encoding",
                  {{"x", {{"field", "layer"}, {"type", "nominal"}, {"sort", layers}}},
                   {"xOffset", {{"field", "network"}, {"sort", nets}}},
                   {"y", {{"field", {{"repeat", "repeat"}}}, {"type", "quantitative"}}},
                   {"color", network_color(nets)}}}}}};
  std::map<std::string, std::pair<double, double>> entropy, dead;  // network → (sum, count)
  for (std::size_t r = 0; r < t.rows(); ++r) {
    const auto& n = t.text(r, "network");
    dead[n].first += t.flag(r, "dead");
    dead[n].second += 1;
    if (!t.flag(r, "dead") && !std::isnan(t.value(r, "label_entropy"))) {
      entropy[n].first += t.value(r, "label_entropy");
      entropy[n].second += 1;
    }
  }
  std::string dead_text;
  for (const auto& n : nets)
    dead_text += (dead_text.empty() ? "" : ", ") + esc(n) + " " + num(dead[n].first, "%.0f") + " of " + num(dead[n].second, "%.0f");
  c.pg.chart("diversity", spec,
             "Per-unit distributions over the live units of each layer (<code>diversity/units.csv</code>); dead units "
             "(never active): " + dead_text + ". Lower distinct labels, entropy, distance and facets mean fewer kinds of input; "
             "fraction_above is the share of inputs whose maximum exceeds the unit's threshold (lower: sparser).");
  if (nets.size() >= 2) {
    auto mean = [&](const std::string& n) { return entropy[n].second ? entropy[n].first / entropy[n].second : std::nan(""); };
    c.claims.push_back({sec, "R's units respond to fewer types of inputs: lower top-K label entropy (paper metric unconfirmed)",
                        nets[0] + " " + num(mean(nets[0])) + ", " + nets[1] + " " + num(mean(nets[1])) +
                            " nats, mean over live units",
                        verdict(mean(nets[0]), mean(nets[1]), false)});
  }
  // The image grids: S and R side by side for each layer and unit.
  std::map<std::pair<std::string, int>, std::map<std::string, std::string>> grids;  // (layer, unit) → network → file
  if (fs::is_directory(c.results / "diversity/grids"))
    for (const auto& e : fs::directory_iterator(c.results / "diversity/grids")) {
      const auto name = e.path().stem().string();
      const auto us = name.rfind("_unit"), first = name.find('_');
      if (e.path().extension() != ".png" || us == std::string::npos || first >= us) continue;
      int unit = 0;
      const auto digits = name.substr(us + 5);
      if (std::from_chars(digits.data(), digits.data() + digits.size(), unit).ec != std::errc()) continue;
      grids[{name.substr(first + 1, us - first - 1), unit}][name.substr(0, first)] = e.path().filename().string();
    }
  if (grids.empty()) {
    c.pg.absent("top-K image grids", "no diversity/grids/*.png (made by: shapebias diversity --grids N)");
  } else {
    fs::create_directories(c.out.path("grids"));
    std::string h = "<h3>Top-K inputs of a few units</h3>\n<div class=\"grids\">\n";
    for (const auto& [key, files] : grids) {
      h += "<div class=\"unit\"><div class=\"unit-title\">" + esc(key.first) + ", unit " + std::to_string(key.second) + "</div>";
      for (const auto& n : nets) {
        const auto f = files.find(n);
        if (f == files.end()) continue;
        fs::copy_file(c.file("diversity/grids/" + f->second), c.out.path("grids/" + f->second), fs::copy_options::overwrite_existing);
        std::string caption = esc(n);
        for (std::size_t r = 0; r < t.rows(); ++r)
          if (t.text(r, "network") == n && t.text(r, "layer") == key.first && t.value(r, "unit") == key.second)
            caption += ": " + num(t.value(r, "distinct_labels"), "%.0f") + " labels, entropy " + num(t.value(r, "label_entropy"));
        h += "<figure class=\"grid\"><img src=\"grids/" + esc(f->second) + "\" alt=\"top inputs of " + esc(n) + " " +
             esc(key.first) + " unit " + std::to_string(key.second) + "\"><figcaption>" + caption + "</figcaption></figure>";
      }
      h += "</div>\n";
    }
    c.pg.html(h + "</div>\n<p class=\"note\">Each grid shows a unit's top-K inputs, cropped around the position of the "
                  "unit's maximum (<code>diversity/grids/</code>).</p>");
  }
  c.pg.provenance({{"diversity", prov}});
  c.pg.end_section();
}

/// An image of a store row, [C, H, W] floats in [0,1], as 8 bits.
image to_image(const float* v, const std::vector<std::size_t>& shape) {
  image img{static_cast<int>(shape[1]), static_cast<int>(shape[2]), static_cast<int>(shape[0]), {}};
  const std::size_t hw = shape[1] * shape[2];
  img.pixels.resize(hw * shape[0]);
  for (std::size_t ch = 0; ch < shape[0]; ++ch)
    for (std::size_t i = 0; i < hw; ++i)
      img.pixels[i * shape[0] + ch] = static_cast<std::uint8_t>(std::lround(std::clamp(v[ch * hw + i], 0.f, 1.f) * 255));
  return img;
}

void robustness(context& c) {
  const std::string sec = "Robustness";
  c.pg.section("robustness", "Adversarial robustness",
               "Accuracy under PGD L∞ attacks of several sizes ε (pixel units in [0,1]), and adversarial examples next to "
               "their clean images.");
  if (!c.present("attack", "PGD robust accuracy", "shapebias demo (attack/robustness.csv from shapebias attack runs)")) {
    c.not_measured(sec, "R is adversarially robust (the study's premise)");
    c.pg.end_section();
    return;
  }
  const json prov = read_json(c.file("attack/provenance.json"));
  const results_table t(c.file("attack/robustness.csv"));
  const auto nets = distinct(t, "model");
  const json data = records(t, {{"model", cell::text}, {"eps", cell::number}, {"images", cell::number},
                                {"clean_accuracy", cell::number}, {"robust_accuracy", cell::number}, {"mean_linf", cell::number}});
  json color = network_color(nets);
  color["field"] = "model";
  json spec = {{"data", {{"values", data}}},
               {"width", 360},
               {"height", 240},
               {"layer",
                {{{"mark", {{"type", "line"}, {"point", true}, {"tooltip", true}}},
                  {"encoding",
                   {{"x", {{"field", "eps"}, {"type", "quantitative"}, {"title", "ε (L∞)"}, {"scale", {{"zero", true}}}}},
                    {"y", {{"field", "robust_accuracy"}, {"type", "quantitative"}, {"title", "accuracy"}, {"scale", {{"domain", {0, 1}}}}}},
                    {"color", color}}}},
                 {{"mark", {{"type", "rule"}, {"strokeDash", {4, 4}}}},
                  {"encoding",
                   {{"y", {{"aggregate", "mean"}, {"field", "clean_accuracy"}}}, {"color", color}}}}}}};
  c.pg.chart("robustness", spec,
             "Robust accuracy under PGD L∞ at each ε (solid), and clean accuracy on the same images (dashed) "
             "(<code>attack/robustness.csv</code>).");
  if (nets.size() >= 2) {
    std::string measured;
    bool all_above = true, any = false;
    for (std::size_t r = 0; r < t.rows(); ++r) {
      if (t.text(r, "model") != nets[0]) continue;
      for (std::size_t q = 0; q < t.rows(); ++q)
        if (t.text(q, "model") == nets[1] && t.value(q, "eps") == t.value(r, "eps")) {
          measured += (measured.empty() ? "" : "; ") + std::string("ε ") + num(t.value(r, "eps"), "%g") + ": " + nets[0] + " " +
                      pct(t.value(r, "robust_accuracy")) + ", " + nets[1] + " " + pct(t.value(q, "robust_accuracy"));
          all_above = all_above && t.value(q, "robust_accuracy") > t.value(r, "robust_accuracy");
          any = true;
        }
    }
    c.claims.push_back({sec, "R is adversarially robust: more accurate than S under PGD at every ε (the study's premise)",
                        any ? measured : "—", !any ? "not measured" : all_above ? "agrees" : "does not agree"});
  }
  // Adversarial examples from the stores, next to their clean images.
  std::vector<std::pair<std::string, json>> recs{{"robustness table (demo)", prov}};
  std::string h = "<h3>Adversarial examples</h3>\n<table class=\"examples\">\n";
  int rows_shown = 0;
  std::set<std::string> notes;
  for (const auto& run : prov.value("params", json::object()).value("runs", json::array())) {
    const auto store = run.value("store", std::string());
    if (store.empty() || !fs::exists(c.results / "attack" / store)) continue;
    const io::store_reader s(c.file("attack/" + store));
    const auto log = parse_log(s.header().provenance);
    const json rec = log.empty() ? json::object() : log.back();
    recs.push_back({store, rec});
    const auto adv = s.header().find("adversarial");
    const auto cp = s.header().find("clean_pred"), ap = s.header().find("adv_pred");
    if (!adv || !cp || !ap) throw io_error(quote_name((c.results / "attack" / store).string()) + ": no adversarial, clean_pred or adv_pred layer");
    const auto& shape = s.header().layers[*adv].shape;
    if (shape.size() != 3 || (shape[0] != 1 && shape[0] != 3))
      throw io_error(quote_name((c.results / "attack" / store).string()) + ": 'adversarial' is not a [1 or 3, H, W] image");
    const std::size_t n = std::min<std::size_t>(c.o.examples, s.rows());
    const auto b = s.read_batch(0, n, {*adv, *cp, *ap});
    // The clean images come from the data set the attack read, when no resizing, cropping, noise or
    // transform was applied to them (the report does not resize images).
    std::unique_ptr<dataset> images;
    const json p = rec.value("params", json::object()).value("preprocessing", json::object());
    const json in = rec.contains("inputs") && rec["inputs"].is_array() && !rec["inputs"].empty() ? rec["inputs"][0] : json::object();
    const bool plain = p.value("resize_shorter", 0) == 0 && p.value("center_crop", 0) == 0 && p.value("noise", json()).is_null() &&
                       p.value("transform", json()).is_null();
    if (plain && in.contains("path")) {
      data_options d;
      d.path = in.value("path", std::string());
      d.format = in.value("format", std::string("auto"));
      d.split = in.value("split", std::string("test"));
      try {
        images = dataset::open(d);
      } catch (const std::exception& e) {
        notes.insert(std::string("clean images not shown: ") + e.what());
      }
    } else {
      notes.insert("clean images are shown only for attacks on images used as stored (no resizing, cropping, noise or transform)");
    }
    const std::string stem = fs::path(store).stem().string();
    h += "<tr><th>" + esc(run.value("model", std::string("?"))) + "<br>ε " + esc(run.contains("eps") ? run["eps"].dump() : "?") + "</th>";
    for (std::size_t i = 0; i < n; ++i) {
      const auto& a = b.data[0];
      const float* av = a.data() + i * shape[0] * shape[1] * shape[2];
      const auto adv_png = "examples/" + stem + "-" + std::to_string(i) + "-adv.png";
      fs::create_directories(c.out.path("examples"));
      write_png(c.out.path(adv_png), to_image(av, shape));
      std::string clean_html;
      if (images && b.ids[i] >= 0 && static_cast<std::size_t>(b.ids[i]) < images->size()) {
        auto img = convert_channels(images->load(static_cast<std::size_t>(b.ids[i])), static_cast<int>(shape[0]));
        if (img.height == static_cast<int>(shape[1]) && img.width == static_cast<int>(shape[2])) {
          const auto clean_png = "examples/" + stem + "-" + std::to_string(i) + "-clean.png";
          write_png(c.out.path(clean_png), img);
          clean_html = "<img src=\"" + clean_png + "\" alt=\"clean input " + std::to_string(b.ids[i]) + "\" title=\"clean\">";
        }
      }
      const int clean_pred = static_cast<int>(b.data[1].data()[i]), adv_pred = static_cast<int>(b.data[2].data()[i]);
      const char* cls = clean_pred != b.labels[i] ? "wrong" : adv_pred == b.labels[i] ? "held" : "fooled";
      h += "<td class=\"" + std::string(cls) + "\">" + clean_html + "<img src=\"" +
           adv_png + "\" alt=\"adversarial input " + std::to_string(b.ids[i]) + "\" title=\"adversarial\"><br>input " +
           std::to_string(b.ids[i]) + ", label " + std::to_string(b.labels[i]) + ": " + std::to_string(clean_pred) + " → " +
           std::to_string(adv_pred) + "</td>";
    }
    h += "</tr>\n";
    ++rows_shown;
  }
  if (rows_shown) {
    std::string note;
    for (const auto& x : notes) note += " " + esc(x) + ".";
    c.pg.html(h + "</table>\n<p class=\"note\">Each cell: the clean image, then the adversarial one; the input's label, and "
                  "the predicted class before → after the attack (red: fooled by the attack; grey: already wrong on the clean image)." + note + "</p>");
  } else {
    c.pg.absent("adversarial examples", "no attack stores listed in attack/provenance.json were found");
  }
  c.pg.provenance(recs);
  c.pg.end_section();
}

void claims_table(page& pg, const std::vector<claim>& claims) {
  std::string h =
      "<section id=\"claims\">\n<h2>The paper's claims, as measured here</h2>\n<p class=\"intro\">Each row states a claim of "
      "Chen, Agarwal &amp; Nguyen (arXiv 2006.09373) as a direction, and what this run measured. Whether they agree is read "
      "off the numbers; small runs can disagree by chance.</p>\n<table class=\"claims\"><tr><th>topic</th><th>claim</th>"
      "<th>measured here</th><th>agreement</th></tr>\n";
  for (const auto& c : claims) {
    const std::string cls = c.verdict == "agrees" ? "agree" : c.verdict == "does not agree" ? "disagree" : "neutral";
    h += "<tr><td>" + esc(c.section) + "</td><td>" + esc(c.statement) + "</td><td>" + esc(c.measured) + "</td><td class=\"" +
         cls + "\">" + esc(c.verdict) + "</td></tr>\n";
  }
  pg.html(h + "</table>\n</section>");
}

constexpr const char* style = R"(
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1180px; padding: 0 24px 48px; color: #222; }
h1 { margin-bottom: 0; } .sub { color: #666; margin-top: 4px; }
nav ul { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 6px 18px; }
section { border-top: 1px solid #ddd; margin-top: 28px; }
.intro { color: #444; max-width: 860px; }
figure { margin: 16px 0; } figcaption { color: #555; font-size: 13px; max-width: 860px; }
table { border-collapse: collapse; margin: 10px 0; } td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
table.small { font-size: 13px; } th { background: #f4f4f4; }
td.agree { background: #e3f4e1; } td.disagree { background: #fbe3e1; } td.neutral { background: #f1f1f1; }
.absent { background: #fff6dd; border-left: 4px solid #e0b030; padding: 6px 10px; }
details.provenance { font-size: 13px; margin: 10px 0 18px; } details code { word-break: break-all; } .meta { color: #777; }
.grids { display: flex; flex-wrap: wrap; gap: 18px; } .unit { border: 1px solid #eee; padding: 6px; }
.unit-title { font-weight: 600; font-size: 13px; } figure.grid { display: inline-block; margin: 4px 8px 4px 0; }
figure.grid img { width: 160px; image-rendering: pixelated; }
table.examples td { font-size: 12px; text-align: center; } table.examples img { width: 56px; image-rendering: pixelated; margin: 1px; }
td.fooled { color: #b22; } td.wrong { color: #999; } .note { font-size: 13px; color: #555; }
)";

constexpr const char* embed_script = R"(
for (const el of document.querySelectorAll('.chart')) {
  const spec = JSON.parse(document.getElementById(el.dataset.spec).textContent);
  vegaEmbed(el, spec, {actions: false, renderer: 'svg'}).catch(e => {
    el.textContent = 'This chart could not be drawn: ' + e.message;
    console.error(e);
  });
}
)";

/// The chart libraries: copied into js/ (with their licences); their versions for the record.
json copy_libraries(const output_folder& out) {
  fs::create_directories(out.path("js"));
  json versions = json::object();
  for (const std::string lib : {"vega", "vega-lite", "vega-embed"}) {
    auto find = [&](const std::string& installed, const std::string& source) {
      try {
        return shipped_file("report/" + lib + "/" + installed, "tools/report/node_modules/" + lib + "/" + source);
      } catch (const io_error& e) {
        throw io_error(std::string(e.what()) + "; run 'bash scripts/setup.sh' to install the chart libraries");
      }
    };
    fs::copy_file(find(lib + ".min.js", "build/" + lib + ".min.js"), out.path("js/" + lib + ".min.js"));
    fs::copy_file(find("LICENSE", "LICENSE"), out.path("js/" + lib + ".LICENSE"));
    versions[lib] = read_json(find("package.json", "package.json")).value("version", std::string("unknown"));
  }
  return versions;
}

void run(const report_options& o, json rec) {
  const fs::path results = fs::path(o.results).lexically_normal();
  if (!fs::is_directory(results)) throw io_error(quote_name(o.results) + ": no such folder");
  bool any = false;
  for (const char* d : {"eval", "tv-filters", "tv", "dissect", "diversity", "attack", "models"})
    any = any || fs::exists(results / d);
  if (!any)
    throw io_error(quote_name(o.results) + ": no results (none of eval/, tv-filters/, tv/, dissect/, diversity/, attack/, models/)");
  const std::string output = o.output.empty() ? (results / "report").string() : o.output;
  output_folder out(output);
  context c{results, out, o, {}, {}, json::array()};
  const json demo = fs::exists(results / "demo.json") ? read_json(c.file("demo.json")) : json();

  overview(c, demo);
  training(c);
  shape_bias(c);
  smoothness(c);
  dissection(c);
  diversity(c);
  robustness(c);
  page head;
  claims_table(head, c.claims);

  const json versions = copy_libraries(out);
  rec["params"] = {{"results", o.results}, {"examples", o.examples}, {"libraries", versions},
                   {"charts", c.pg.charts()}, {"absent", c.pg.absent_count()}};
  rec["inputs"] = c.inputs;
  rec["finished"] = io::utc_now();
  std::ostringstream html;
  html << "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>shapebias report: " << esc(o.results)
       << "</title>\n<script src=\"js/vega.min.js\"></script>\n<script src=\"js/vega-lite.min.js\"></script>\n"
       << "<script src=\"js/vega-embed.min.js\"></script>\n<style>" << style << "</style>\n</head>\n<body>\n"
       << "<h1>Shape and simplicity biases: S vs R</h1>\n<p class=\"sub\">" << esc(results.string()) << " — made by <code>"
       << esc(rec.value("argv", std::string())) << "</code> on " << esc(rec.value("finished", std::string())) << "</p>\n"
       << c.pg.toc() << head.body() << c.pg.body() << "<footer><p class=\"note\">Charts: Vega " << versions["vega"].get<std::string>()
       << ", Vega-Lite " << versions["vega-lite"].get<std::string>() << ", vega-embed " << versions["vega-embed"].get<std::string>()
       << " (BSD-3-Clause; licences in <code>js/</code>). This report's own record: <code>provenance.json</code>.</p></footer>\n"
       << "<script>" << embed_script << "</script>\n</body>\n</html>\n";
  out.write("index.html", html.str());
  out.write("provenance.json", rec.dump(2) + "\n");
  out.commit();
  if (!o.common.quiet)
    std::fprintf(stderr, "report: %d charts, %d sections absent; open %s/index.html\n", c.pg.charts(), c.pg.absent_count(),
                 output.c_str());
}

}  // namespace

int run_report(std::span<char*> args) {
  report_options o;
  CLI::App app{
      "An HTML report of a results folder (as `shapebias demo` writes it): charts of the variant accuracy, filter and\n"
      "activation TV, dissection, diversity and robustness, S vs R, with image grids, adversarial examples, the\n"
      "paper's claims as measured here and the command behind every figure. The chart libraries are copied next to\n"
      "index.html, so the report opens offline. Missing steps are reported as absent.\n\n"
      "Example: shapebias report results && xdg-open results/report/index.html",
      "shapebias report"};
  app.add_option("RESULTS", o.results, "Results folder (eval/, tv-filters/, tv/, dissect/, diversity/, attack/, models/)")
      ->required()->group("Input");
  app.add_option("-o,--output", o.output, "Report folder (default RESULTS/report)")->group("Output");
  app.add_option("--examples", o.examples, "Adversarial examples shown per attack")
      ->check(CLI::Range(std::size_t{0}, std::size_t{100}))->group("Output")->capture_default_str();
  add_common_options(app, o.common, opt_quiet);
  if (!parse(app, args)) return 0;
  run(o, start_record("report", args));
  return 0;
}

}  // namespace shapebias::tools
