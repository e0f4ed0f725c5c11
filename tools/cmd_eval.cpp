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
#include <sstream>
#include <tuple>

#include "common/ablation.hpp"
#include "common/child.hpp"
#include "common/csv.hpp"
#include "common/data_cli.hpp"
#include "common/dataset.hpp"
#include "common/endpoints.hpp"
#include "common/output_folder.hpp"
#include "common/provenance.hpp"
#include "common/rng.hpp"
#include "shapebias/io/provenance.hpp"
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
  auto args = dump_args(model, d, c, {layer});
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
  struct variant {
    std::string name, spec;
  };
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
  auto rec = start_record("eval", args);
  if (!o.ablate.empty()) {
    rec["params"]["ablate"] = ablate_record;
    rec["seeds"]["ablate"] = o.ablate_seed;
    if (!o.dissection.empty()) rec["params"]["dissection"] = o.dissection;
  }
  output_folder out(o.output, {"stores"});
  auto store = [&](const std::string& variant, std::size_t m) {
    return out.path("stores/" + variant + "-" + o.names[m] + ".h5");
  };
  std::vector<nlohmann::json> model_records;
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
  const auto cl = stats::intersect_correct(correct);
  {
    std::string text = "# inputs that every model (" + nlohmann::json(o.names).dump() + ") classifies correctly, top-1, clean\n";
    for (auto id : cl) text += std::to_string(id) + "\n";
    out.write("cl_ids.txt", text);
  }
  if (!o.common.quiet)
    std::fprintf(stderr, "eval: clean top-1 %s; CL set %zu of %llu inputs\n",
               [&] {
                 std::string s;
                 for (std::size_t m = 0; m < clean.size(); ++m)
                   s += (m ? ", " : "") + o.names[m] + " " + csv_number(100 * clean[m].acc.top1()) + "%";
                 return s;
               }().c_str(),
               cl.size(), static_cast<unsigned long long>(clean[0].acc.count()));

  // 2. Variants on the CL set.
  std::ostringstream table;
  table << "variant,inputs";
  for (const auto& n : o.names) table << ",top1_" << n;
  for (const auto& n : o.names) table << ",top" << std::min<std::size_t>(o.k, clean[0].acc.classes()) << "_" << n;
  table << "\n";
  nlohmann::json jtable = nlohmann::json::array();
  auto row = [&](const std::string& name, const std::vector<const stats::topk_accuracy*>& accs) {
    table << name << "," << accs[0]->count();
    nlohmann::json j{{"variant", name}, {"inputs", accs[0]->count()}};
    for (std::size_t m = 0; m < accs.size(); ++m) {
      table << "," << csv_number(accs[m]->top1());
      j["top1"][o.names[m]] = accs[m]->top1();
    }
    for (std::size_t m = 0; m < accs.size(); ++m) {
      table << "," << csv_number(accs[m]->topk());
      j["topk"][o.names[m]] = accs[m]->topk();
    }
    table << "\n";
    jtable.push_back(j);
  };
  {
    std::vector<const stats::topk_accuracy*> accs;
    for (const auto& r : clean) accs.push_back(&r.acc);
    row("clean (all inputs)", accs);
  }
  if (!cl.empty()) {
    auto on_cl = o.data;
    on_cl.ids = out.path("cl_ids.txt");
    auto eval_variant = [&](const std::string& name, data_options d) {
      std::vector<run> runs;
      std::vector<const stats::topk_accuracy*> accs;
      for (std::size_t m = 0; m < o.models.size(); ++m)
        runs.push_back(evaluate(o.models[m], d, o, store(name, m), step(name, m), false, ablate[m]));
      for (const auto& r : runs) accs.push_back(&r.acc);
      row(name, accs);
      if (name == "clean" && !o.ablate.empty() && !o.common.quiet)
        for (std::size_t m = 0; m < runs.size(); ++m)
          std::fprintf(stderr, "eval: %s ablated: top-1 on CL %s%% (accuracy drop %s%%)\n", o.names[m].c_str(),
                       csv_number(100 * runs[m].acc.top1()).c_str(), csv_number(100 * (1 - runs[m].acc.top1())).c_str());
    };
    eval_variant("clean", on_cl);
    for (const auto& v : variants) {
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
  } else if (!variants.empty()) {
    std::fprintf(stderr, "eval: the CL set is empty: no variant is evaluated\n");
  }
  out.write("accuracy.csv", table.str());
  if (!o.ablate.empty()) out.write("ablation.csv", ablation_csv.str());

  // 3. Cue-conflict shape bias.
  if (!o.cue_conflict.empty()) {
    const auto mapping_path = o.mapping.empty() ? default_mapping() : o.mapping;
    const auto mapping = read_mapping(mapping_path);
    const auto s = read_stimuli(o.cue_conflict, mapping, out.path("cue-conflict.txt"));
    std::ostringstream csv, decisions;
    csv << "model,category,shape_decisions,texture_decisions,neither,excluded,shape_bias\n";
    decisions << "model,stimulus,shape,texture,decision\n";
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
      for (std::size_t i = 0; i < r.ids.size(); ++i) {
        const auto id = static_cast<std::size_t>(r.ids[i]);
        decisions << o.names[m] << "," << s.files[id] << "," << mapping.categories[s.shape[id]] << ","
                  << mapping.categories[s.texture[id]] << ","
                  << mapping.categories[stats::coarse_decision(r.probs.data() + i * K, K, mapping)] << "\n";
      }
      csv << o.names[m] << ",all," << acc.shape_decisions() << "," << acc.texture_decisions() << "," << acc.neither() << ","
          << acc.excluded() << "," << csv_number(acc.shape_bias()) << "\n";
      for (std::size_t c = 0; c < acc.categories(); ++c)
        csv << o.names[m] << "," << mapping.categories[c] << "," << acc.shape_decisions(c) << "," << acc.texture_decisions(c)
            << "," << acc.neither(c) << "," << acc.excluded(c) << "," << csv_number(acc.shape_bias(c)) << "\n";
      rec["shape_bias"][o.names[m]] = acc.shape_bias();
    }
    out.write("shape_bias.csv", csv.str());
    out.write("cue_conflict_decisions.csv", decisions.str());
    rec["params"]["mapping"] = {{"path", mapping_path}, {"sha256", sha256_file(mapping_path)}};
  }

  // 4. ImageNet-C.
  if (!o.imagenet_c.empty()) {
    stats::corruption_table baseline;
    {
      std::ifstream in(o.baseline);
      if (!in) throw io_error(quote_name(o.baseline) + ": cannot open: " + std::strerror(errno));
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
          throw io_error(quote_name(o.baseline) + " line " + std::to_string(no) + ": expected corruption,severity,accuracy");
        }
      }
    }
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
    std::ostringstream acc_csv, ce_csv;
    acc_csv << "model,corruption,severity,inputs,top1\n";
    ce_csv << "model,corruption,ce\n";
    for (std::size_t m = 0; m < o.models.size(); ++m) {
      stats::corruption_table t;
      for (const auto& x : sets) {
        const auto r = evaluate(o.models[m], plain(x.path, "folder"), o, "", step("imagenet-c", m), false, ablate[m]);
        t.accuracy[x.corruption][x.severity] = r.acc.top1();
        acc_csv << o.names[m] << "," << x.corruption << "," << x.severity << "," << r.acc.count() << ","
                << csv_number(r.acc.top1()) << "\n";
      }
      stats::corruption_errors e;
      try {
        e = stats::mean_corruption_error(t, baseline);
      } catch (const std::invalid_argument& x) {
        throw io_error(quote_name(o.imagenet_c) + " against " + quote_name(o.baseline) + ": " + x.what());
      }
      for (const auto& [c, v] : e.ce) ce_csv << o.names[m] << "," << c << "," << csv_number(v) << "\n";
      ce_csv << o.names[m] << ",mCE," << csv_number(e.mce) << "\n";
      rec["mce"][o.names[m]] = e.mce;
    }
    out.write("imagenet_c_accuracy.csv", acc_csv.str());
    out.write("imagenet_c_ce.csv", ce_csv.str());
    rec["params"]["baseline"] = {{"path", o.baseline}, {"sha256", sha256_file(o.baseline)}};
  }

  rec["params"]["models"] = model_records;
  rec["params"]["variants"] = o.variants;
  rec["params"]["k"] = o.k;
  rec["params"]["cl_inputs"] = cl.size();
  const auto& dump_rec = clean[0].provenance.empty() ? nlohmann::json() : clean[0].provenance.back();
  rec["inputs"] = dump_rec.is_object() ? dump_rec.value("inputs", nlohmann::json()) : nlohmann::json();
  if (dump_rec.is_object() && dump_rec.contains("params")) rec["params"]["preprocessing"] = dump_rec["params"].value("preprocessing", nlohmann::json());
  rec["finished"] = io::utc_now();
  out.write("accuracy.json", nlohmann::json{{"table", jtable}, {"provenance", rec}}.dump(2) + "\n");
  out.write("provenance.json", rec.dump(2) + "\n");
  out.commit();
  std::cout << table.str();
  return 0;
}

}  // namespace shapebias::tools
