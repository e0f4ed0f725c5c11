// SPDX-License-Identifier: MIT
// `shapebias eval`: the shape-bias experiments of paper-spec §2. Accuracy of one or more models on a
// data set and its variants, on the set both classify correctly (ImageNet-CL); cue-conflict shape
// bias (Geirhos); ImageNet-C mCE. Each model runs as `shapebias dump MODEL … -l logits -o -`;
// the formulas live in include/shapebias/stats/{accuracy,shape_bias,corruption}.hpp.

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <tuple>

#include "common/ablation.hpp"
#include "common/child.hpp"
#include "common/csv.hpp"
#include "common/data_cli.hpp"
#include "common/dataset.hpp"
#include "common/endpoints.hpp"
#include "common/merge.hpp"
#include "common/output_folder.hpp"
#include "common/provenance.hpp"
#include "common/rng.hpp"
#include "shapebias/io/provenance.hpp"
#include "shapebias/io/state.hpp"
#include "shapebias/stats/accuracy.hpp"
#include "shapebias/stats/corruption.hpp"
#include "shapebias/stats/shape_bias.hpp"

namespace shapebias::tools {
namespace {

namespace fs = std::filesystem;

struct eval_options {
  common_options common;
  std::vector<std::string> models, names{"S", "R"}, variants;
  data_options data;
  std::size_t k = 5;
  std::string cue_conflict, mapping, imagenet_c, baseline, output;
  std::vector<std::string> ablate;  // LAYER:zero|keep|random:SELECT
  std::string dissection;           // a `dissect` output folder, for concept=NAME and random
  std::uint64_t ablate_seed = 0;
};

/// The result of one model on one data set.
struct run {
  stats::topk_accuracy acc;
  std::vector<std::int64_t> correct_ids;  // top-1 correct
  xt::xarray<double> probs;               // [rows, K] softmax, when kept (cue-conflict)
  std::vector<std::int64_t> ids;
  nlohmann::json provenance;
};

/// Runs `model` on `d` through a child dump of its logits; writes the per-image logits and
/// correctness to the store `store` (when not empty), with `record` (this step's provenance).
run evaluate(const std::string& model, const data_options& d, const eval_options& o, const std::string& store,
             const nlohmann::json& record, bool keep_probs = false, const std::vector<std::string>& ablate = {}) {
  std::optional<run> r;
  child_stream child(dump_args(model, d, o.common, {"logits"}, ablate));
  child.consume([&](io::batch_source& src) {
    const auto& h = src.header();
    if (h.layers.size() != 1 || h.layers[0].shape.size() != 1)
      throw std::runtime_error("model " + quote_name(model) + " must return [B, K] logits");
    const std::size_t K = h.layers[0].shape[0];
    r.emplace(run{stats::topk_accuracy(K, std::min(o.k, K)), {}, {}, {}, nlohmann::json::array()});
    std::unique_ptr<io::batch_sink> sink;
    if (!store.empty()) {
      io::header out;
      out.layers = {{"logits", {K}}, {"correct_top1", {}}, {"correct_topk", {}}};
      out.provenance = h.provenance;
      out.provenance.push_back(record.dump());
      sink = open_sink(store, out, {}, false);
    }
    std::vector<std::vector<double>> kept;
    while (auto b = src.next()) {
      const auto& x = b->data[0];
      std::vector<std::uint8_t> c1(b->rows()), ck(b->rows());
      r->acc.update(x, b->labels.data(), c1.data(), ck.data());
      for (std::size_t i = 0; i < b->rows(); ++i)
        if (c1[i]) r->correct_ids.push_back(b->ids[i]);
      r->ids.insert(r->ids.end(), b->ids.begin(), b->ids.end());
      if (keep_probs) {
        const auto p = stats::softmax_rows(x);
        for (std::size_t i = 0; i < b->rows(); ++i) kept.emplace_back(p.data() + i * K, p.data() + (i + 1) * K);
      }
      if (sink) {
        std::vector<float> f1(c1.begin(), c1.end()), fk(ck.begin(), ck.end());
        sink->write({b->rows(), b->ids.data(), b->labels.data(), {x.data(), f1.data(), fk.data()}});
      }
    }
    r->provenance = parse_log(src.header().provenance);
    if (sink) {
      auto log = src.header().provenance;  // a stream's log is complete at its end
      auto rec = record;
      rec["summary"] = {{"rows", r->acc.count()}, {"top1", r->acc.top1()}, {"topk", r->acc.topk()}};
      rec["finished"] = io::utc_now();
      log.push_back(rec.dump());
      sink->finish(&log);
    }
    if (keep_probs) {
      r->probs = xt::zeros<double>({kept.size(), K});
      for (std::size_t i = 0; i < kept.size(); ++i) std::copy(kept[i].begin(), kept[i].end(), r->probs.data() + i * K);
    }
  });
  if (r->acc.count() == 0) throw std::runtime_error(quote_name(d.path) + ": no inputs to evaluate");
  return std::move(*r);
}

std::string stem_key(const fs::path& rel) { return (rel.parent_path() / rel.stem()).generic_string(); }

/// An external variant folder (e.g. Stylized-ImageNet) as a list file whose line i is clean input
/// i's counterpart: for folder and list data sets, the file with the same relative path (any image
/// extension); for IDX, a list.txt written by `shapebias transform` with the same labels.
std::string variant_list(const std::string& name, const std::string& folder, const data_options& clean,
                         const std::string& out) {
  const auto data = dataset::open(clean);
  std::ofstream list(out);
  if (!fs::is_directory(folder)) throw io_error(quote_name(folder) + ": variant '" + name + "' is not a folder");
  if (data->item_path(0).empty()) {  // IDX: a transform's list.txt
    data_options v;
    v.path = folder + "/list.txt";
    v.format = "list";
    const auto var = dataset::open(v);
    if (var->size() != data->size())
      throw io_error(quote_name(folder) + ": variant '" + name + "' has " + std::to_string(var->size()) + " inputs, the clean set " +
                     std::to_string(data->size()));
    for (std::size_t i = 0; i < data->size(); ++i) {
      if (var->label(i) != data->label(i))
        throw io_error(quote_name(folder) + ": variant '" + name + "' input " + std::to_string(i) + " has label " +
                       std::to_string(var->label(i)) + ", the clean set " + std::to_string(data->label(i)));
      list << fs::absolute(var->item_path(i)).string() << " " << var->label(i) << "\n";
    }
    return out;
  }
  const fs::path root = fs::is_directory(clean.path) ? fs::path(clean.path) : fs::path(clean.path).parent_path();
  std::map<std::string, std::string> files;  // relative path without extension → file
  for (const auto& e : fs::recursive_directory_iterator(folder))
    if (e.is_regular_file()) files[stem_key(fs::relative(e.path(), folder))] = e.path().string();
  std::size_t matched = 0;
  for (std::size_t i = 0; i < data->size(); ++i) {
    const auto key = stem_key(fs::path(data->item_path(i)).lexically_relative(root));
    auto it = files.find(key);
    if (it == files.end())
      throw io_error(quote_name(folder) + ": variant '" + name + "' has no image for clean input " + std::to_string(i) +
                     " ('" + key + ".*')");
    list << fs::absolute(it->second).string() << " " << data->label(i) << "\n";
    ++matched;
  }
  if (matched != files.size())
    throw io_error(quote_name(folder) + ": variant '" + name + "' has " + std::to_string(files.size() - matched) +
                   " file(s) that match no clean input");
  return out;
}

stats::coarse_mapping read_mapping(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw io_error(quote_name(path) + ": cannot open the class mapping: " + std::strerror(errno));
  const auto j = nlohmann::json::parse(in, nullptr, false);
  const auto* members = j.is_object() ? (j.contains("indices") ? &j["indices"] : j.contains("imagenet_indices") ? &j["imagenet_indices"] : nullptr) : nullptr;
  if (!j.is_object() || !j.contains("categories") || !j["categories"].is_array() || !members || !members->is_object())
    throw io_error(quote_name(path) + ": not a class mapping (expected {\"categories\": [...], \"indices\": {category: [class, ...]}})");
  stats::coarse_mapping m;
  for (const auto& c : j["categories"]) {
    if (!c.is_string()) throw io_error(quote_name(path) + ": category names must be strings");
    const auto name = c.get<std::string>();
    if (!members->contains(name)) throw io_error(quote_name(path) + ": category '" + name + "' has no class list");
    std::vector<std::size_t> idx;
    for (const auto& v : (*members)[name]) {
      if (!v.is_number_unsigned()) throw io_error(quote_name(path) + ": category '" + name + "' lists a class that is not an index");
      idx.push_back(v.get<std::size_t>());
    }
    m.categories.push_back(name);
    m.members.push_back(std::move(idx));
  }
  for (const auto& [k, v] : members->items())
    if (!m.find(k)) throw io_error(quote_name(path) + ": class list for '" + k + "', which is not in \"categories\"");
  return m;
}

std::string default_mapping() { return shipped_file("imagenet16_categories.json", "data/imagenet16_categories.json"); }

/// Cue-conflict stimuli: every image file under `dir`, named <shape><n>-<texture><m>.<ext>.
struct stimuli {
  std::string list;  // a list file: path, shape category
  std::vector<std::size_t> shape, texture;
  std::vector<std::string> files;  // relative to the stimuli folder
};

stimuli read_stimuli(const std::string& dir, const stats::coarse_mapping& m, const std::string& list_path) {
  if (!fs::is_directory(dir)) throw io_error(quote_name(dir) + ": the cue-conflict stimuli are not a folder");
  std::vector<fs::path> files;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file() && torchvision_image_name(e.path())) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  if (files.empty()) throw io_error(quote_name(dir) + ": no images");
  static const std::regex name_re(R"(^([A-Za-z_ ]+?)\d+-([A-Za-z_ ]+?)\d+$)");
  stimuli s{list_path, {}, {}, {}};
  std::ofstream list(list_path);
  for (const auto& f : files) {
    std::smatch mt;
    const std::string stem = f.stem().string();
    if (!std::regex_match(stem, mt, name_re))
      throw io_error(quote_name(f.string()) + ": not a cue-conflict name <shape><n>-<texture><m>");
    const auto sh = m.find(mt[1].str()), tx = m.find(mt[2].str());
    if (!sh || !tx)
      throw io_error(quote_name(f.string()) + ": class '" + (!sh ? mt[1].str() : mt[2].str()) + "' is not in the mapping");
    s.shape.push_back(*sh);
    s.texture.push_back(*tx);
    s.files.push_back(fs::relative(f, dir).generic_string());
    list << fs::absolute(f).string() << " 0\n";  // the label is unused: the categories are kept here
  }
  return s;
}

/// The number of channels (axis 1) of `layer`'s output in `model`, from one input of `d` through a
/// child dump.
std::int64_t layer_channels(const std::string& model, const data_options& d, const common_options& c, const std::string& layer) {
  auto whole = d;
  whole.shard.clear();  // the first input of the data set, whichever shard runs
  auto args = dump_args(model, whole, c, {layer});
  args.insert(args.end(), {"--limit", "1"});
  std::int64_t channels = 0;
  child_stream child(args);
  child.consume([&](io::batch_source& src) {
    const auto i = src.header().find(layer);
    if (!i || src.header().layers[*i].shape.empty())
      throw io_error("layer '" + layer + "' of " + quote_name(model) + " has no channel axis to ablate");
    channels = static_cast<std::int64_t>(src.header().layers[*i].shape[0]);
    while (src.next()) {
    }
  });
  return channels;
}

}  // namespace

/// The --ablate specs of network `name` (model m) as `dump --ablate` specs: concept=NAME reads the
/// channels labelled NAME in the dissection's units.csv; random draws channels with a seed per
/// model, for concept=NAME from the channels not labelled NAME. Every channel, and every unit of
/// the layer in units.csv, is checked against the model's layer. Throws usage_error for a malformed
/// spec, io_error for a concept with no channel or a units.csv of another model.
std::vector<ablation> resolve_ablations(const eval_options& o, std::size_t m) {
  std::optional<csv_table> units;
  std::map<std::string, std::int64_t> channels_of;  // per layer, asked of the model once
  std::vector<ablation> out;
  for (const auto& spec : o.ablate) {
    const std::string who = "--ablate '" + spec + "'";
    const auto a = spec.find(':'), b = a == std::string::npos ? a : spec.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos || a == 0)
      throw usage_error(who + ": expected LAYER:MODE:SELECT with MODE zero, keep or random");
    const std::string layer = spec.substr(0, a), mode = spec.substr(a + 1, b - a - 1), select = spec.substr(b + 1);
    if (mode != "zero" && mode != "keep" && mode != "random")
      throw usage_error(who + ": mode '" + mode + "' is not zero, keep or random");
    const bool by_concept = select.rfind("concept=", 0) == 0;
    if (by_concept && o.dissection.empty())
      throw usage_error(who + ": concept=NAME needs --dissection DIR (a 'shapebias dissect' output)");
    std::optional<ablation> listed;
    std::size_t count = 0;
    if (!by_concept && mode != "random") {
      listed = ablation::with_channels(layer, mode == "keep", select, who);
    } else if (!by_concept) {
      std::string bad;
      const auto n = number_list(select, bad);
      if (!bad.empty() || n.size() != 1 || !(n[0] >= 1) || n[0] != std::floor(n[0]))
        throw usage_error(who + ": random takes a channel count N or concept=NAME");
      count = static_cast<std::size_t>(n[0]);
    }
    if (!channels_of.count(layer)) channels_of[layer] = layer_channels(o.models[m], o.data, o.common, layer);
    const std::int64_t channels = channels_of[layer];
    const std::string of_layer = "layer '" + layer + "' of " + quote_name(o.models[m]) + " has " + std::to_string(channels) + " channels";
    if (listed) {
      if (listed->channels.back() >= channels)
        throw io_error(who + ": channel " + std::to_string(listed->channels.back()) + " is out of range: " + of_layer);
      out.push_back(*listed);
      continue;
    }
    std::vector<std::int64_t> labelled;
    if (by_concept) {
      const std::string name = select.substr(8);
      if (!units) units = read_csv((fs::path(o.dissection) / "units.csv").string());
      const auto cn = units->column("network"), cl = units->column("layer"), cu = units->column("unit"),
                 cb = units->column("label"), cd = units->column("dead");
      bool any = false;
      for (std::size_t r = 0; r < units->rows.size(); ++r) {
        const auto& row = units->rows[r];
        if (row[cn] != o.names[m] || row[cl] != layer) continue;
        any = true;
        std::int64_t u = -1;
        const auto [end, ec] = std::from_chars(row[cu].data(), row[cu].data() + row[cu].size(), u);
        if (ec != std::errc() || end != row[cu].data() + row[cu].size() || u < 0)
          throw io_error(units->where(r) + ": unit '" + row[cu] + "' is not a channel number");
        if (u >= channels)
          throw io_error(units->where(r) + ": unit " + row[cu] + " of network '" + o.names[m] + "' is not a channel: " + of_layer +
                         " (a dissection of another model?)");
        if (row[cd] == "0" && row[cb] == name) labelled.push_back(u);
      }
      if (!any) throw io_error(quote_name(units->path) + ": no units of network '" + o.names[m] + "' layer '" + layer + "'");
      if (labelled.empty())
        throw io_error(quote_name(units->path) + ": no unit of network '" + o.names[m] + "' layer '" + layer + "' is labelled '" +
                       name + "'");
      if (mode != "random") {
        ablation x{layer, mode == "keep", labelled};
        x.normalise(who);
        out.push_back(x);
        continue;
      }
      count = labelled.size();
    }
    // The control: as many channels, drawn from those not labelled with the concept (all for N).
    std::vector<std::int64_t> pool;
    for (std::int64_t c = 0; c < channels; ++c)
      if (std::find(labelled.begin(), labelled.end(), c) == labelled.end()) pool.push_back(c);
    if (count > pool.size())
      throw usage_error(who + ": " + std::to_string(count) + " channels asked, " + of_layer +
                        (by_concept ? ", " + std::to_string(pool.size()) + " of them not labelled '" + select.substr(8) + "'" : ""));
    // A partial Fisher-Yates shuffle, seeded per model and layer spec.
    std::mt19937_64 rng(stream_seed(o.ablate_seed, static_cast<std::int64_t>(m), std::hash<std::string>{}(spec) & 0xffff));
    for (std::size_t i = 0; i < count; ++i)
      std::swap(pool[i], pool[i + std::uniform_int_distribution<std::size_t>(0, pool.size() - 1 - i)(rng)]);
    ablation x{layer, false, std::vector<std::int64_t>(pool.begin(), pool.begin() + static_cast<long>(count))};
    x.normalise(who);
    out.push_back(x);
  }
  return out;
}

namespace {

/// A variant of --variant NAME=SPEC.
struct variant {
  std::string name, spec;
};

/// Everything eval decides before it runs a model: the options, the variants and the ablations
/// resolved per model.
struct eval_plan {
  eval_options o;
  std::vector<variant> variants;
  std::vector<std::vector<std::string>> ablate;  // per model: dump --ablate specs
  nlohmann::json ablate_record = nlohmann::json::array();
  std::string ablation_csv;
};

/// What eval's tables are made of: the key (settings and data, equal in every shard of a run), the
/// accuracy of every model on every table row, the CL set, and the cue-conflict and ImageNet-C
/// results. A run, `shapebias merge` of its shards and rank 0 of an MPI run all write the tables
/// from this alone.
struct eval_result {
  nlohmann::json key;
  std::vector<std::string> rows;  // accuracy.csv's rows, in order
  std::map<std::string, std::vector<stats::topk_accuracy>> acc;  // per row, per model
  std::vector<std::int64_t> cl;
  std::vector<stats::shape_bias_accumulator> bias;             // per model, with --cue-conflict
  std::vector<std::map<std::int64_t, std::string>> decisions;   // per model: stimulus id → CSV row
  std::vector<std::map<std::pair<std::string, int>, stats::topk_accuracy>> corrupted;  // per model, --imagenet-c
};

stats::corruption_table read_baseline(const std::string& path) {
  stats::corruption_table baseline;
  std::ifstream in(path);
  if (!in) throw io_error(quote_name(path) + ": cannot open: " + std::strerror(errno));
  std::string line;
  for (std::size_t no = 1; std::getline(in, line); ++no) {
    if (line.empty() || line[0] == '#' || line.rfind("corruption,", 0) == 0) continue;
    std::stringstream ss(line);
    std::string c, sv, a;
    std::getline(ss, c, ',');
    std::getline(ss, sv, ',');
    std::getline(ss, a, ',');
    try {
      std::size_t u1 = 0, u2 = 0;
      const int sev = std::stoi(sv, &u1);
      const double acc = std::stod(a, &u2);
      if (u1 != sv.size() || u2 != a.size() || c.empty()) throw std::invalid_argument("");
      baseline.accuracy[c][sev] = acc;
    } catch (const std::exception&) {
      throw io_error(quote_name(path) + " line " + std::to_string(no) + ": expected corruption,severity,accuracy");
    }
  }
  return baseline;
}

/// Runs every model on every input of this process's shard: the clean set (its CL set), the
/// variants on the CL set, the cue-conflict stimuli and the ImageNet-C sets. Per-image stores and
/// list files go to `out`.
eval_result evaluate_all(const eval_plan& p, const output_folder& out, const nlohmann::json& rec) {
  const auto& o = p.o;
  const auto& ablate = p.ablate;
  eval_result res;
  auto store = [&](const std::string& variant, std::size_t m) {
    return out.path("stores/" + variant + "-" + o.names[m] + ".h5");
  };
  nlohmann::json model_records = nlohmann::json::array();
  for (std::size_t m = 0; m < o.models.size(); ++m)
    model_records.push_back({{"name", o.names[m]}, {"path", o.models[m]}, {"sha256", sha256_file(o.models[m])}});
  // The provenance record of one model's pass: this command, the model and what it ran on.
  auto step = [&](const std::string& what, std::size_t m) {
    auto r = rec;
    r["params"] = {{"evaluation", what}, {"model", model_records[m]}, {"k", o.k}};
    if (what != "all" && !ablate[m].empty()) r["params"]["ablate"] = ablate[m];
    return r;
  };
  // The clean data set's preprocessing applied to other images (stimuli, corruption sets).
  auto plain = [&](const std::string& path, const char* format) {
    auto d = o.data;
    d.path = path;
    d.format = format;
    d.ids.clear();
    d.transform = "none";
    d.noise = 0;
    return d;
  };

  // 1. Clean accuracy, and the CL set: the inputs every model gets right (top-1).
  std::vector<run> clean;
  for (std::size_t m = 0; m < o.models.size(); ++m)
    clean.push_back(evaluate(o.models[m], o.data, o, store("all", m), step("all", m)));
  std::vector<std::vector<std::int64_t>> correct;
  for (const auto& r : clean) correct.push_back(r.correct_ids);
  res.cl = stats::intersect_correct(correct);
  {
    std::string text;
    for (auto id : res.cl) text += std::to_string(id) + "\n";
    out.write("cl_ids.txt", text);  // the variants' --ids; write_eval rewrites it with its header
  }
  if (!o.common.quiet)
    std::fprintf(stderr, "eval: clean top-1 %s; CL set %zu of %llu inputs\n",
               [&] {
                 std::string s;
                 for (std::size_t m = 0; m < clean.size(); ++m)
                   s += (m ? ", " : "") + o.names[m] + " " + csv_number(100 * clean[m].acc.top1()) + "%";
                 return s;
               }().c_str(),
               res.cl.size(), static_cast<unsigned long long>(clean[0].acc.count()));
  res.rows.push_back("clean (all inputs)");
  for (const auto& r : clean) res.acc[res.rows.back()].push_back(r.acc);

  // 2. Variants on the CL set. A shard whose CL set is empty has nothing to run: empty accuracies.
  auto on_cl = o.data;
  on_cl.ids = out.path("cl_ids.txt");
  auto eval_variant = [&](const std::string& name, const data_options& d) {
    res.rows.push_back(name);
    auto& accs = res.acc[name];
    for (std::size_t m = 0; m < o.models.size(); ++m) {
      if (res.cl.empty()) {
        accs.emplace_back(clean[m].acc.classes(), clean[m].acc.k());
        continue;
      }
      accs.push_back(evaluate(o.models[m], d, o, store(name, m), step(name, m), false, ablate[m]).acc);
      if (name == "clean" && !o.ablate.empty() && !o.common.quiet)
        std::fprintf(stderr, "eval: %s ablated: top-1 on CL %s%% (accuracy drop %s%%)\n", o.names[m].c_str(),
                     csv_number(100 * accs.back().top1()).c_str(), csv_number(100 * (1 - accs.back().top1())).c_str());
    }
  };
  if (res.cl.empty() && !p.variants.empty() && shard::parse(o.data.shard).whole())
    std::fprintf(stderr, "eval: the CL set is empty: no variant is evaluated\n");
  eval_variant("clean", on_cl);
  for (const auto& v : p.variants) {
    auto d = on_cl;
    if (v.spec.rfind("noise:", 0) == 0) {
      d.noise = std::stod(v.spec.substr(6));
    } else if (v.spec.rfind("folder:", 0) == 0) {
      d.path = variant_list(v.name, v.spec.substr(7), o.data, out.path("variant-" + v.name + ".txt"));
      d.format = "list";
    } else {
      d.transform = v.spec;
    }
    eval_variant(v.name, d);
  }

  // 3. Cue-conflict shape bias.
  if (!o.cue_conflict.empty()) {
    const auto mapping_path = o.mapping.empty() ? default_mapping() : o.mapping;
    const auto mapping = read_mapping(mapping_path);
    const auto s = read_stimuli(o.cue_conflict, mapping, out.path("cue-conflict.txt"));
    for (std::size_t m = 0; m < o.models.size(); ++m) {
      // No store: the stimuli have no fine label, so per-image correctness would mean nothing.
      auto r = evaluate(o.models[m], plain(s.list, "list"), o, "", step("cue-conflict", m), true, ablate[m]);
      try {
        mapping.check(r.probs.shape()[1]);
      } catch (const std::invalid_argument& e) {
        throw io_error(quote_name(mapping_path) + ": " + e.what() + " (model " + quote_name(o.models[m]) + " has " +
                       std::to_string(r.probs.shape()[1]) + " outputs)");
      }
      stats::shape_bias_accumulator acc(mapping);
      std::vector<std::size_t> sh, tx;
      for (auto id : r.ids) {
        sh.push_back(s.shape[static_cast<std::size_t>(id)]);
        tx.push_back(s.texture[static_cast<std::size_t>(id)]);
      }
      acc.update(r.probs, sh.data(), tx.data());
      const std::size_t K = r.probs.shape()[1];
      auto& rows = res.decisions.emplace_back();
      for (std::size_t i = 0; i < r.ids.size(); ++i) {
        const auto id = static_cast<std::size_t>(r.ids[i]);
        rows[r.ids[i]] = s.files[id] + "," + mapping.categories[s.shape[id]] + "," + mapping.categories[s.texture[id]] + "," +
                         mapping.categories[stats::coarse_decision(r.probs.data() + i * K, K, mapping)];
      }
      res.bias.push_back(std::move(acc));
    }
  }

  // 4. ImageNet-C.
  if (!o.imagenet_c.empty()) {
    read_baseline(o.baseline);  // refused before the sets run
    if (!fs::is_directory(o.imagenet_c)) throw io_error(quote_name(o.imagenet_c) + ": not a folder");
    struct set {
      std::string corruption;
      int severity;
      std::string path;
      bool operator<(const set& b) const { return std::tie(corruption, severity) < std::tie(b.corruption, b.severity); }
    };
    std::vector<set> sets;
    for (const auto& c : fs::directory_iterator(o.imagenet_c)) {
      if (!c.is_directory()) continue;
      for (const auto& s : fs::directory_iterator(c.path())) {
        // Severity folders are named by a small number ("1" … "5"); other entries are not sets.
        const auto n = s.path().filename().string();
        int sev = 0;
        const auto [end, ec] = std::from_chars(n.data(), n.data() + n.size(), sev);
        if (!s.is_directory() || ec != std::errc() || end != n.data() + n.size() || n.size() > 3) continue;
        const set x{c.path().filename().string(), sev, s.path().string()};
        for (const auto& y : sets)
          if (y.corruption == x.corruption && y.severity == sev)
            throw io_error(quote_name(x.path) + ": severity " + std::to_string(sev) + " of '" + x.corruption +
                           "' also in " + quote_name(y.path));
        sets.push_back(x);
      }
    }
    std::sort(sets.begin(), sets.end());
    if (sets.empty()) throw io_error(quote_name(o.imagenet_c) + ": no CORRUPTION/SEVERITY folders");
    // Labels are class folder positions: every set must have the same class folders.
    nlohmann::json classes;
    for (const auto& x : sets) {
      data_options d;
      d.path = x.path;
      d.format = "folder";
      const auto here = dataset::open(d)->describe()["classes"];
      if (classes.is_null()) classes = here;
      else if (here != classes)
        throw io_error(quote_name(d.path) + ": its class folders differ from those of " + quote_name(sets[0].path) +
                       " (labels are class folder positions)");
    }
    for (std::size_t m = 0; m < o.models.size(); ++m) {
      auto& t = res.corrupted.emplace_back();
      for (const auto& x : sets)
        t.emplace(std::pair{x.corruption, x.severity},
                  evaluate(o.models[m], plain(x.path, "folder"), o, "", step("imagenet-c", m), false, ablate[m]).acc);
    }
  }

  // The key: what must be equal in every shard of one run.
  nlohmann::json params = {{"models", model_records}, {"names", o.names}, {"variants", o.variants}, {"k", o.k}};
  if (!o.ablate.empty()) {
    params["ablate"] = p.ablate_record;
    params["ablation_csv"] = p.ablation_csv;
    params["ablate_seed"] = o.ablate_seed;
    if (!o.dissection.empty()) params["dissection"] = o.dissection;
  }
  if (!o.cue_conflict.empty()) {
    const auto mapping_path = o.mapping.empty() ? default_mapping() : o.mapping;
    params["cue_conflict"] = o.cue_conflict;
    params["mapping"] = {{"path", mapping_path}, {"sha256", sha256_file(mapping_path)}};
  }
  if (!o.imagenet_c.empty()) {
    params["imagenet_c"] = o.imagenet_c;
    params["baseline"] = {{"path", o.baseline}, {"sha256", sha256_file(o.baseline)}};
  }
  const auto& dump_rec = clean[0].provenance.empty() ? nlohmann::json() : clean[0].provenance.back();
  const auto dump_params = dump_rec.is_object() ? dump_rec.value("params", nlohmann::json::object()) : nlohmann::json::object();
  res.key = {{"params", params},
             {"inputs", dump_rec.is_object() ? dump_rec.value("inputs", nlohmann::json()) : nlohmann::json()},
             {"preprocessing", dump_params.value("preprocessing", nlohmann::json())},
             {"ids", dump_params.value("ids", nlohmann::json())}};
  return res;
}

/// eval.h5: the accuracy of every model on every row ("acc/ROW/MODEL", the rows listed in the
/// attribute "rows"), the CL set ("cl"), per model the cue-conflict accumulator and decisions
/// ("cue_conflict/MODEL/…") and the ImageNet-C accuracies ("imagenet_c/MODEL/CORRUPTION/SEVERITY").
void save_result(hid_t h5, const eval_result& r, const std::string& file) {
  const auto names = r.key.at("params").at("names").get<std::vector<std::string>>();
  auto array = [](const std::vector<double>& v) {
    xt::xarray<double> a = xt::zeros<double>({v.size()});
    std::copy(v.begin(), v.end(), a.begin());
    return a;
  };
  for (std::size_t i = 0; i < r.rows.size(); ++i)
    for (std::size_t m = 0; m < names.size(); ++m)
      io::write_state(h5, "acc/" + std::to_string(i) + "/" + names[m], r.acc.at(r.rows[i])[m].save(), file);
  io::h5::write_attribute(h5, "rows", nlohmann::json(r.rows).dump(), file);
  stats::state cl;
  cl.kind = "ids";
  cl.arrays = {{"id", array(std::vector<double>(r.cl.begin(), r.cl.end()))}};
  io::write_state(h5, "cl", cl, file);
  for (std::size_t m = 0; m < r.bias.size(); ++m) {
    io::write_state(h5, "cue_conflict/" + names[m] + "/shape_bias", r.bias[m].save(), file);
    stats::state d;
    d.kind = "decisions";
    std::vector<double> ids;
    std::string rows;
    for (const auto& [id, row] : r.decisions[m]) ids.push_back(static_cast<double>(id)), rows += row + "\n";
    d.arrays = {{"id", array(ids)}};
    d.text = {{"rows", rows}};
    io::write_state(h5, "cue_conflict/" + names[m] + "/decisions", d, file);
  }
  nlohmann::json sets = nlohmann::json::array();
  for (std::size_t m = 0; m < r.corrupted.size(); ++m)
    for (const auto& [set, acc] : r.corrupted[m]) {
      io::write_state(h5, "imagenet_c/" + names[m] + "/" + set.first + "/" + std::to_string(set.second), acc.save(), file);
      if (m == 0) sets.push_back({set.first, set.second});
    }
  io::h5::write_attribute(h5, "imagenet_c_sets", sets.dump(), file);
}

eval_result load_result(hid_t h5, const nlohmann::json& key, const std::string& file) {
  eval_result r;
  r.key = key;
  const auto& params = key.at("params");
  const auto names = params.at("names").get<std::vector<std::string>>();
  r.rows = nlohmann::json::parse(io::h5::read_string_attribute(h5, "rows", file)).get<std::vector<std::string>>();
  for (std::size_t i = 0; i < r.rows.size(); ++i)
    for (const auto& n : names)
      r.acc[r.rows[i]].push_back(stats::topk_accuracy::load(io::read_state(h5, "acc/" + std::to_string(i) + "/" + n, file)));
  const auto cl = io::read_state(h5, "cl", file);
  for (double id : cl.array("id")) r.cl.push_back(static_cast<std::int64_t>(id));
  for (const auto& n : params.contains("cue_conflict") ? names : std::vector<std::string>{}) {
    r.bias.push_back(stats::shape_bias_accumulator::load(io::read_state(h5, "cue_conflict/" + n + "/shape_bias", file)));
    const auto d = io::read_state(h5, "cue_conflict/" + n + "/decisions", file);
    std::istringstream rows(d.choice("rows"));
    auto& out = r.decisions.emplace_back();
    std::string row;
    for (double id : d.array("id"))
      if (std::getline(rows, row)) out[static_cast<std::int64_t>(id)] = row;
  }
  const auto sets = nlohmann::json::parse(io::h5::read_string_attribute(h5, "imagenet_c_sets", file));
  for (const auto& n : params.contains("imagenet_c") ? names : std::vector<std::string>{}) {
    auto& t = r.corrupted.emplace_back();
    for (const auto& x : sets) {
      const std::string c = x.at(0);
      const int sev = x.at(1);
      t.emplace(std::pair{c, sev}, stats::topk_accuracy::load(io::read_state(h5, "imagenet_c/" + n + "/" + c + "/" + std::to_string(sev), file)));
    }
  }
  return r;
}

/// Adds shard `b` to `a`: accuracies add; the CL sets and the decisions of disjoint ids join.
void merge_result(eval_result& a, const eval_result& b) {
  for (auto& [row, accs] : a.acc)
    for (std::size_t m = 0; m < accs.size(); ++m) accs[m].merge(b.acc.at(row)[m]);
  std::vector<std::int64_t> cl;
  std::merge(a.cl.begin(), a.cl.end(), b.cl.begin(), b.cl.end(), std::back_inserter(cl));
  a.cl = std::move(cl);
  for (std::size_t m = 0; m < a.bias.size(); ++m) {
    a.bias[m].merge(b.bias[m]);
    a.decisions[m].insert(b.decisions[m].begin(), b.decisions[m].end());
  }
  for (std::size_t m = 0; m < a.corrupted.size(); ++m)
    for (auto& [set, acc] : a.corrupted[m]) acc.merge(b.corrupted[m].at(set));
}

/// The tables, eval.h5 (states, partial record) and provenance of `r` in `out`; the accuracy
/// table also to stdout when `print`.
void write_eval(const eval_result& r, nlohmann::json rec, const partial_info& part, const output_folder& out, bool print) {
  const auto& params = r.key.at("params");
  const auto names = params.at("names").get<std::vector<std::string>>();
  const std::size_t k = params.at("k");
  {
    std::string text = "# inputs that every model (" + nlohmann::json(names).dump() + ") classifies correctly, top-1, clean\n";
    for (auto id : r.cl) text += std::to_string(id) + "\n";
    out.write("cl_ids.txt", text);
  }
  std::ostringstream table;
  table << "variant,inputs";
  for (const auto& n : names) table << ",top1_" << n;
  for (const auto& n : names) table << ",top" << std::min<std::size_t>(k, r.acc.at(r.rows[0])[0].classes()) << "_" << n;
  table << "\n";
  nlohmann::json jtable = nlohmann::json::array();
  for (const auto& name : r.rows) {
    if (r.cl.empty() && name != r.rows[0]) break;  // no variant is evaluated on an empty CL set
    const auto& accs = r.acc.at(name);
    table << name << "," << accs[0].count();
    nlohmann::json j{{"variant", name}, {"inputs", accs[0].count()}};
    for (std::size_t m = 0; m < accs.size(); ++m) {
      table << "," << csv_number(accs[m].top1());
      j["top1"][names[m]] = accs[m].top1();
    }
    for (std::size_t m = 0; m < accs.size(); ++m) {
      table << "," << csv_number(accs[m].topk());
      j["topk"][names[m]] = accs[m].topk();
    }
    table << "\n";
    jtable.push_back(j);
  }
  out.write("accuracy.csv", table.str());
  rec["params"] = params;
  rec["params"].erase("ablation_csv");
  if (params.contains("ablate")) {
    out.write("ablation.csv", params.at("ablation_csv").get<std::string>());
    rec["seeds"]["ablate"] = params.at("ablate_seed");
  }
  for (std::size_t m = 0; m < r.bias.size(); ++m) {
    if (m == 0) rec["shape_bias"] = nlohmann::json::object();
    rec["shape_bias"][names[m]] = r.bias[m].shape_bias();
  }
  if (!r.bias.empty()) {
    std::ostringstream csv, decisions;
    csv << "model,category,shape_decisions,texture_decisions,neither,excluded,shape_bias\n";
    decisions << "model,stimulus,shape,texture,decision\n";
    for (std::size_t m = 0; m < r.bias.size(); ++m) {
      const auto& acc = r.bias[m];
      for (const auto& [id, row] : r.decisions[m]) decisions << names[m] << "," << row << "\n";
      csv << names[m] << ",all," << acc.shape_decisions() << "," << acc.texture_decisions() << "," << acc.neither() << ","
          << acc.excluded() << "," << csv_number(acc.shape_bias()) << "\n";
      for (std::size_t c = 0; c < acc.categories(); ++c)
        csv << names[m] << "," << acc.mapping().categories[c] << "," << acc.shape_decisions(c) << "," << acc.texture_decisions(c)
            << "," << acc.neither(c) << "," << acc.excluded(c) << "," << csv_number(acc.shape_bias(c)) << "\n";
    }
    out.write("shape_bias.csv", csv.str());
    out.write("cue_conflict_decisions.csv", decisions.str());
  }
  if (!r.corrupted.empty()) {
    const auto& b = params.at("baseline");
    if (sha256_file(b.at("path")) != b.at("sha256"))
      throw io_error(quote_name(b.at("path").get<std::string>()) + ": the baseline has changed since the shards ran");
    const auto baseline = read_baseline(b.at("path"));
    std::ostringstream acc_csv, ce_csv;
    acc_csv << "model,corruption,severity,inputs,top1\n";
    ce_csv << "model,corruption,ce\n";
    for (std::size_t m = 0; m < r.corrupted.size(); ++m) {
      stats::corruption_table t;
      for (const auto& [set, acc] : r.corrupted[m]) {
        t.accuracy[set.first][set.second] = acc.top1();
        acc_csv << names[m] << "," << set.first << "," << set.second << "," << acc.count() << "," << csv_number(acc.top1()) << "\n";
      }
      stats::corruption_errors e;
      try {
        e = stats::mean_corruption_error(t, baseline);
      } catch (const std::invalid_argument& x) {
        throw io_error(quote_name(params.at("imagenet_c").get<std::string>()) + " against " +
                       quote_name(b.at("path").get<std::string>()) + ": " + x.what());
      }
      for (const auto& [c, v] : e.ce) ce_csv << names[m] << "," << c << "," << csv_number(v) << "\n";
      ce_csv << names[m] << ",mCE," << csv_number(e.mce) << "\n";
      rec["mce"][names[m]] = e.mce;
    }
    out.write("imagenet_c_accuracy.csv", acc_csv.str());
    out.write("imagenet_c_ce.csv", ce_csv.str());
  }
  rec["params"]["cl_inputs"] = r.cl.size();
  rec["params"]["shard"] = part.shard_record();
  rec["params"]["preprocessing"] = r.key.at("preprocessing");
  rec["inputs"] = r.key.at("inputs");
  rec["finished"] = io::utc_now();
  out.write("accuracy.json", nlohmann::json{{"table", jtable}, {"provenance", rec}}.dump(2) + "\n");
  out.write("provenance.json", rec.dump(2) + "\n");
  const std::string h5name = out.path("eval.h5");
  io::h5::handle h5(io::h5::check(H5Fcreate(h5name.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), h5name, "cannot create"));
  save_result(h5.get(), r, h5name);
  write_partial(h5.get(), part, h5name);
  io::h5::write_attribute(h5.get(), "provenance", nlohmann::json{{"run", rec}}.dump(), h5name);
  if (print) std::cout << table.str();
}

/// One process's run into the folder `output`: the whole run or a --shard (the whole prints its
/// accuracy table), or an MPI rank's part (which does not).
void run_plan(const eval_plan& p, const nlohmann::json& rec, const std::string& output, bool rank_part) {
  output_folder out(output, {"stores"});
  const auto r = evaluate_all(p, out, rec);
  const auto part = partial_info::of("eval", shard::parse(p.o.data.shard), r.key);
  write_eval(r, rec, part, out, part.whole() && !rank_part);
  out.commit();
}

}  // namespace

void merge_eval(const std::vector<merge_part>& parts, const partial_info& whole, nlohmann::json rec, const std::string& output,
                bool quiet) {
  auto r = load_result(parts[0].file.get(), whole.key, parts[0].name);
  for (std::size_t i = 1; i < parts.size(); ++i) merge_result(r, load_result(parts[i].file.get(), whole.key, parts[i].name));
  output_folder out(output, {"stores"});
  // Per-image stores row by row; the list files of variants and stimuli are the same in every part.
  // A shard whose CL set is empty has no variant stores: the shards of the eval run are checked.
  const auto dir = [&](std::size_t i) { return fs::path(parts[i].name).parent_path(); };
  std::set<std::string> names;
  for (std::size_t i = 0; i < parts.size(); ++i)
    for (const auto& e : fs::directory_iterator(dir(i) / "stores")) names.insert(e.path().filename().string());
  for (const auto& name : names) {
    std::vector<std::string> stores;
    for (std::size_t i = 0; i < parts.size(); ++i)
      if (fs::exists(dir(i) / "stores" / name)) stores.push_back((dir(i) / "stores" / name).string());
    merge_stores(stores, out.path("stores/" + name), rec.at("merge").at("step"), true, false);
  }
  for (const auto& e : fs::directory_iterator(dir(0)))
    if (e.is_regular_file() && e.path().extension() == ".txt" && e.path().filename() != "cl_ids.txt")
      fs::copy_file(e.path(), out.path(e.path().filename().string()));
  write_eval(r, std::move(rec), whole, out, true);
  out.commit();
  if (!quiet) std::fprintf(stderr, "eval: merged %zu shards; wrote %s\n", parts.size(), output.c_str());
}


int run_eval(std::span<char*> args) {
  eval_options o;
  CLI::App app{
      "Accuracy of one or more models (S first, then R) on a data set and its variants (paper-spec §2), on\n"
      "the inputs that every model classifies correctly when clean (ImageNet-CL, written as cl_ids.txt);\n"
      "cue-conflict shape bias; ImageNet-C corruption errors. Each model runs as 'shapebias dump … -l logits'.\n\n"
      "Examples:\n"
      "  shapebias eval S.pt R.pt /usr/share/datasets/fashion-mnist --normalize 0.286/0.353 \\\n"
      "      --variant noise=noise:0.1 --variant scrambled=scramble:2 --variant edges=edges -o eval/\n"
      "  shapebias eval S.pt R.pt imagenet/val --resize 256 --crop 224 --normalize imagenet \\\n"
      "      --variant stylized=folder:stylized-imagenet/val --cue-conflict cue-conflict/ \\\n"
      "      --imagenet-c imagenet-c/ --baseline alexnet_c.csv -o eval/",
      "shapebias eval"};
  app.add_option("models", o.models, "TorchScript models")->required()->group("Input");
  add_data_options(app, o.data, true);
  // The data set is the last positional argument.
  app.get_option("data")->required(false);
  app.add_option("--names", o.names, "Names of the models, comma-separated")->delimiter(',')->group("Input")
      ->capture_default_str();
  app.add_option("--variant", o.variants,
                 "NAME=SPEC: a variant evaluated on the CL inputs. SPEC is a --transform spec (gray, scramble:G, "
                 "edges, silhouette[:T]), noise:SIGMA, or folder:DIR (an external variant with the clean set's file "
                 "names, or a 'shapebias transform' output for IDX data)")
      ->group("Variants");
  app.add_option("-k,--top-k", o.k, "k of top-k accuracy")->check(CLI::PositiveNumber)->group("Variants")->capture_default_str();
  app.add_option("--cue-conflict", o.cue_conflict, "Folder of cue-conflict stimuli named <shape><n>-<texture><m>.png")
      ->group("Shape bias");
  app.add_option("--mapping", o.mapping, "Coarse class mapping JSON {categories, indices} [data/imagenet16_categories.json]")
      ->group("Shape bias");
  app.add_option("--imagenet-c", o.imagenet_c, "ImageNet-C root: CORRUPTION/SEVERITY/CLASS/images")->group("ImageNet-C");
  app.add_option("--baseline", o.baseline, "CSV corruption,severity,accuracy of the baseline model (AlexNet)")
      ->group("ImageNet-C");
  app.add_option("--ablate", o.ablate,
                 "LAYER:MODE:SELECT: evaluate the CL set, variants, cue-conflict and ImageNet-C with channels of LAYER "
                 "ablated (paper-spec §4.4); the clean pass that defines CL is not. MODE zero or keep (zero all others) "
                 "with SELECT a channel list or concept=NAME (the channels --dissection labels NAME); MODE random with "
                 "SELECT N (random channels) or concept=NAME (as many random channels, none of them labelled NAME). "
                 "Repeatable")
      ->group("Ablation");
  app.add_option("--dissection", o.dissection, "A 'shapebias dissect' output folder (its units.csv, with these --names)")
      ->group("Ablation");
  app.add_option("--ablate-seed", o.ablate_seed, "Seed of the random channels")->group("Ablation")->capture_default_str();
  app.add_option("-o,--output", o.output, "Output folder")->required()->group("Output");
  bool mpi = false;
  add_shard_options(app, o.data.shard, mpi);
  add_common_options(app, o.common);
  if (!parse(app, args)) return 0;
  // models… data: the last positional is the data set.
  if (o.data.path.empty()) {
    if (o.models.size() < 2) throw usage_error("give one or more models and then the data set");
    o.data.path = o.models.back();
    o.models.pop_back();
  }
  check_names(o.names, o.models.size(), "models");
  o.names.resize(o.models.size());
  if (!o.imagenet_c.empty() && o.baseline.empty()) throw usage_error("--imagenet-c needs --baseline");
  transform_spec::parse(o.data.transform);
  std::vector<variant> variants;
  for (const auto& v : o.variants) {
    const auto eq = v.find('=');
    if (eq == std::string::npos || eq == 0) throw usage_error("--variant '" + v + "': expected NAME=SPEC");
    variant x{v.substr(0, eq), v.substr(eq + 1)};
    if (x.spec.rfind("noise:", 0) == 0) {
      try {
        const double sigma = std::stod(x.spec.substr(6));
        if (!(sigma > 0) || !std::isfinite(sigma)) throw std::invalid_argument("");
      } catch (const std::exception&) {
        throw usage_error("--variant '" + v + "': noise:SIGMA needs a positive number");
      }
    } else if (x.spec.rfind("folder:", 0) != 0) {
      try {
        transform_spec::parse(x.spec);
      } catch (const usage_error& e) {
        const std::string why = e.what();
        throw usage_error("--variant '" + v + "': " + why.substr(why.find("': ") + 3));
      }
    }
    if (x.name == "clean" || x.name == "all" || x.name == "cue-conflict" || std::any_of(variants.begin(), variants.end(), [&](const variant& y) { return y.name == x.name; }))
      throw usage_error("--variant '" + v + "': the name '" + x.name + "' is taken");
    variants.push_back(x);
  }
  // Ablations, resolved per model (before anything runs, so that a bad spec costs nothing).
  std::vector<std::vector<std::string>> ablate(o.models.size());
  nlohmann::json ablate_record = nlohmann::json::array();
  std::ostringstream ablation_csv;
  ablation_csv << "model,spec,layer,mode,count,channels\n";
  for (std::size_t m = 0; m < o.models.size() && !o.ablate.empty(); ++m) {
    const auto resolved = resolve_ablations(o, m);
    for (std::size_t i = 0; i < resolved.size(); ++i) {
      const auto& x = resolved[i];
      ablate[m].push_back(x.to_string());
      const std::string list = x.to_string().substr(x.to_string().rfind(':') + 1);
      ablation_csv << o.names[m] << "," << csv_text(o.ablate[i]) << "," << x.layer << "," << (x.keep ? "keep" : "zero") << ","
                   << x.channels.size() << "," << csv_text(list) << "\n";
      ablate_record.push_back({{"model", o.names[m]}, {"spec", o.ablate[i]}, {"layer", x.layer},
                               {"mode", x.keep ? "keep" : "zero"}, {"channels", x.channels}});
    }
  }
  eval_plan plan{o, std::move(variants), std::move(ablate), std::move(ablate_record), ablation_csv.str()};
  const auto rec = start_record("eval", args);
  if (!mpi) {
    run_plan(plan, rec, o.output, false);
    return 0;
  }
  run_ranks(o.output, true, o.common.quiet, [&](const std::string& shard, const std::string& part) {
    auto p = plan;
    p.o.data.shard = shard;
    run_plan(p, rec, part, true);
  });
  return 0;
}

}  // namespace shapebias::tools
