// SPDX-License-Identifier: MIT
// `shapebias diversity`: the third simplicity bias (paper-spec §5), "R neurons respond to fewer types
// of inputs". The paper's code for it was never released, so this measures the family of §5 and
// labels every output "paper metric unconfirmed": per unit, the top-K inputs (streaming), how many
// classes they span (and the entropy), how far apart they lie in a fixed reference embedding
// (cosine, L2), how many clusters (facets) they form, and how sparse and how dead the unit is.
// The statistics live in include/shapebias/stats/{topk,diversity}.hpp.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <unordered_map>

#include <xtensor/xadapt.hpp>

#include "common/child.hpp"
#include "common/cli.hpp"
#include "common/data_cli.hpp"
#include "common/dataset.hpp"
#include "common/endpoints.hpp"
#include "common/merge.hpp"
#include "common/mpi.hpp"
#include "common/output_folder.hpp"
#include "common/partial.hpp"
#include "common/provenance.hpp"
#include "shapebias/io/hdf5.hpp"
#include "shapebias/io/provenance.hpp"
#include "shapebias/io/state.hpp"
#include "shapebias/stats/diversity.hpp"
#include "shapebias/stats/topk.hpp"

namespace shapebias::tools {
namespace {

constexpr const char* status = "paper metric unconfirmed";

struct diversity_options {
  common_options common;
  std::vector<std::string> inputs, names{"S", "R"}, layers;
  data_options data;  // models run live; labels and image grids
  std::size_t k = 49;
  std::string rank = "max";
  std::string embedding, embedding_source;
  std::size_t kmax = 8;
  std::string facet_rule = "silhouette";
  double min_silhouette = 0.25;
  std::uint64_t seed = 0;
  double threshold = 0;
  std::string thresholds;  // a dissect output folder: per-unit NetDissect thresholds
  double dead_eps = 0;
  std::size_t grids = 0, crop = 0;
  std::string output;
  bool mpi = false;
};

struct layer_stats {
  std::string name;
  std::vector<std::size_t> shape;
  std::size_t index = 0;
  std::optional<stats::topk_units> top;
  std::optional<stats::unit_activity> activity;
};

struct network {
  std::string name, input;
  std::vector<layer_stats> layers;
  std::uint64_t rows = 0;
  std::unordered_map<std::int64_t, std::int64_t> labels;  // of the ids in some top-K (pruned per batch)
  nlohmann::json provenance;
};

/// Per-unit NetDissect thresholds of `net`'s `layer` from a dissect output's dissect.h5.
std::vector<double> dissect_thresholds(const std::string& dir, const std::string& net, const std::string& layer, std::size_t units) {
  const std::string file = (std::filesystem::path(dir) / "dissect.h5").string();
  io::h5::quiet();
  io::h5::handle h(io::h5::check(H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), file, "cannot open"));
  const auto s = io::read_state(h.get(), net + "/" + layer + "/result", file);
  const auto& t = s.array("threshold");
  if (t.size() != units)
    throw io_error(quote_name(file) + ": " + net + "/" + layer + " has " + std::to_string(t.size()) + " thresholds for " +
                   std::to_string(units) + " units");
  return std::vector<double>(t.begin(), t.end());
}

network top_inputs(const std::string& name, const std::string& input, const diversity_options& o) {
  network net{name, input, {}, 0, {}, nullptr};
  const auto threads = static_cast<unsigned>(resolved_threads(o.common.threads));
  const auto rank = stats::parse_topk_rank(o.rank);
  const auto sh = shard::parse(o.data.shard);
  with_activations(input, o.data, o.common, o.layers, [&](io::batch_source& src) {
    const auto& h = src.header();
    std::size_t capacity = 0;  // the most ids the top-Ks of every layer can hold
    std::vector<std::string> names = o.layers;
    if (names.empty())
      for (const auto& l : h.layers)
        if (l.shape.size() == 3 || l.shape.size() == 1) names.push_back(l.name);
    for (const auto& n : names) {
      const auto i = h.find(n);
      if (!i) throw io_error(quote_name(input) + ": no layer '" + n + "'");
      const auto& s = h.layers[*i].shape;
      if (s.size() != 3 && s.size() != 1)
        throw io_error(quote_name(input) + ": layer '" + n + "' has rows of shape " + stats::detail::shape_string(s) +
                       "; diversity needs [C, H, W] maps or [C] units");
      std::vector<double> th(s[0], o.threshold);
      if (!o.thresholds.empty()) th = dissect_thresholds(o.thresholds, name, n, s[0]);
      net.layers.push_back({n, s, *i, stats::topk_units(s[0], o.k, rank), stats::unit_activity(th)});
      capacity += s[0] * o.k;
    }
    while (auto b = src.next()) {
      keep_shard_rows(*b, sh);  // stores and streams; a model run live reads its shard only
      if (!b->rows()) continue;
      for (auto& l : net.layers) {
        try {
          const stats::map_scores s(b->data[l.index], l.top->rank(), threads);  // read once for both
          l.top->update(s, b->ids.data(), threads);
          l.activity->update(s, b->ids.data());
        } catch (const std::domain_error& e) {
          throw std::runtime_error(quote_name(input) + " layer '" + l.name + "': " + e.what());
        }
      }
      net.rows += b->rows();
      for (std::size_t r = 0; r < b->rows(); ++r) net.labels[b->ids[r]] = b->labels[r];
      // Only the labels of ids in some top-K are needed, and an id that has left every top-K never
      // returns, so dropping the others is exact. Done when the map holds twice as many ids as the
      // top-Ks can: memory stays O(units × K) and the sorting cost is amortised over as many rows.
      if (net.labels.size() > 2 * capacity) {
        std::unordered_map<std::int64_t, std::int64_t> keep;
        for (const auto& l : net.layers)
          for (std::size_t u = 0; u < l.shape[0]; ++u)
            for (const auto& e : l.top->result(u)) keep.emplace(e.id, net.labels.at(e.id));
        net.labels.swap(keep);
      }
    }
    net.provenance = parse_log(src.header().provenance);
  });
  if (net.rows < o.k && sh.whole())  // a shard may hold fewer; the merged shards must hold K (write_diversity)
    throw io_error(quote_name(input) + ": K = " + std::to_string(o.k) + " but only " + std::to_string(net.rows) +
                   " inputs (lower --top-k)");
  return net;
}

/// Embedding vectors of `ids` from layer `layer` of `source` (a store, or a model run live on the
/// data set): [C] rows as they are, [C, H, W] maps averaged over space.
std::map<std::int64_t, std::vector<float>> embeddings(const std::string& source, const std::string& layer,
                                                      const std::set<std::int64_t>& ids, const diversity_options& o) {
  std::map<std::int64_t, std::vector<float>> out;
  auto d = o.data;
  std::optional<temp_file> list;
  if (is_model(source)) {
    std::string text;
    for (auto id : ids) text += std::to_string(id) + "\n";
    list.emplace(text);
    d.ids = list->path;
  }
  with_activations(source, d, o.common, {layer}, [&](io::batch_source& src) {
    const auto& h = src.header();
    const auto i = h.find(layer);
    if (!i) throw io_error(quote_name(source) + ": no embedding layer '" + layer + "'");
    const auto& s = h.layers[*i].shape;
    if (s.empty()) throw io_error(quote_name(source) + ": embedding layer '" + layer + "' has scalar rows");
    std::size_t per = 1;
    for (auto v : s) per *= v;
    const std::size_t space = per / s[0];
    while (auto b = src.next())
      for (std::size_t r = 0; r < b->rows(); ++r) {
        if (!ids.count(b->ids[r])) continue;
        const float* x = b->data[*i].data() + r * per;
        std::vector<float> e(s[0]);
        for (std::size_t c = 0; c < s[0]; ++c) {
          double sum = 0;
          for (std::size_t p = 0; p < space; ++p) {
            const float v = x[c * space + p];
            if (!std::isfinite(v))
              throw io_error(quote_name(source) + ": the embedding layer '" + layer + "' holds " + (std::isnan(v) ? "NaN" : "Inf") +
                             " for input id " + std::to_string(b->ids[r]) + " (channel " + std::to_string(c) +
                             "); embeddings need finite values");
            sum += v;
          }
          e[c] = static_cast<float>(sum / static_cast<double>(space));
        }
        out[b->ids[r]] = std::move(e);
      }
  });
  if (out.empty()) throw io_error(quote_name(source) + ": the embedding layer '" + layer + "' has no inputs (none of the top-K ids)");
  for (auto id : ids)
    if (!out.count(id))
      throw io_error(quote_name(source) + ": the embedding layer '" + layer + "' has no row for input id " + std::to_string(id));
  return out;
}

double median(std::vector<double> v) {
  std::erase_if(v, [](double x) { return std::isnan(x); });
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double mean(const std::vector<double>& v) {
  double s = 0, n = 0;
  for (double x : v)
    if (!std::isnan(x)) s += x, n += 1;
  return n ? s / n : std::nan("");
}

/// The resize and centre crop that made a network's activations, from its provenance (recorded by
/// the dump that ran the model, live or into a store); none when not recorded.
preprocessing recorded_view(const nlohmann::json& provenance) {
  preprocessing p;
  const auto id = source_identity(provenance);
  if (id.is_object() && id["preprocessing"].is_object()) {
    p.resize = id["preprocessing"].value("resize_shorter", 0);
    p.crop = id["preprocessing"].value("center_crop", 0);
  }
  return p;
}

/// A grid of crops (ceil(√K) per row) of the top-K images of one unit around each argmax; `pre`:
/// the resize and crop the activations were made with.
void write_grid(const std::string& path, const dataset& data, const std::vector<stats::topk_entry>& top,
                const std::vector<std::size_t>& shape, std::size_t crop, const preprocessing& pre) {
  const std::size_t cols = static_cast<std::size_t>(std::ceil(std::sqrt(static_cast<double>(top.size()))));
  const std::size_t rows = (top.size() + cols - 1) / cols;
  std::optional<image> grid;
  std::size_t c = crop;  // the cell size, one for the whole grid: --grid-crop, or half the first preprocessed image
  for (std::size_t j = 0; j < top.size(); ++j) {
    const auto img = convert_channels(data.load(static_cast<std::size_t>(top[j].id)), 3);
    const std::size_t mh = shape.size() == 3 ? shape[1] : 1, mw = shape.size() == 3 ? shape[2] : 1;
    const auto g = preprocessed_view(img.height, img.width, pre);  // the region the map sees
    if (!c) c = static_cast<std::size_t>(std::max(g.height * g.scale_y, g.width * g.scale_x) / 2);
    if (!grid) {
      grid.emplace();
      grid->height = static_cast<int>(rows * (c + 1) + 1);
      grid->width = static_cast<int>(cols * (c + 1) + 1);
      grid->channels = 3;
      grid->pixels.assign(static_cast<std::size_t>(grid->height * grid->width * 3), 255);
    }
    // The argmax cell's centre, mapped proportionally onto the preprocessed image (no receptive-field
    // offsets), then back through its crop and resize onto the image.
    const double cy = g.source_y((static_cast<double>(top[j].y) + 0.5) * g.height / static_cast<double>(mh));
    const double cx = g.source_x((static_cast<double>(top[j].x) + 0.5) * g.width / static_cast<double>(mw));
    const long y0 = static_cast<long>(std::lround(cy - static_cast<double>(c) / 2)), x0 = static_cast<long>(std::lround(cx - static_cast<double>(c) / 2));
    const std::size_t gy = (j / cols) * (c + 1) + 1, gx = (j % cols) * (c + 1) + 1;
    for (std::size_t y = 0; y < c; ++y)
      for (std::size_t x = 0; x < c; ++x) {
        const long sy = y0 + static_cast<long>(y), sx = x0 + static_cast<long>(x);
        if (sy < 0 || sx < 0 || sy >= img.height || sx >= img.width) continue;  // outside: white
        for (int ch = 0; ch < 3; ++ch)
          grid->pixels[((gy + y) * static_cast<std::size_t>(grid->width) + gx + x) * 3 + static_cast<std::size_t>(ch)] =
              img.pixels[(static_cast<std::size_t>(sy) * static_cast<std::size_t>(img.width) + static_cast<std::size_t>(sx)) * 3 +
                         static_cast<std::size_t>(ch)];
      }
  }
  if (grid) write_png(path, *grid);
}

/// What the tables are made of: the key (settings and sources, equal in every shard of a run), the
/// networks' top-K and activity, and the embeddings of the ids in some top-K. A run, `shapebias
/// merge` of its shards and rank 0 of an MPI run all write their tables from this alone.
struct diversity_result {
  nlohmann::json key;
  std::vector<network> nets;
  std::map<std::int64_t, std::vector<float>> emb;
};

/// What made the activations of `path` (a model or a store; a stream cannot be read twice), for a
/// merge key.
nlohmann::json identity_of(const std::string& path) {
  if (path == "-") return nullptr;
  if (is_model(path)) return {{"model_sha256", sha256_file(path)}};
  return source_identity(parse_log(open_source(path, 1)->header().provenance));
}

diversity_result compute(diversity_options o) {
  const bool live = is_model(o.inputs[0]);
  for (const auto& in : o.inputs)
    if (is_model(in) != live) throw usage_error("give either models (with --data) or activations (stores, streams), not both");
  if (live && o.data.path.empty()) throw usage_error("models as inputs need --data (the data set to run them on)");
  if (live && o.layers.empty()) throw usage_error("models as inputs need -l/--layers");
  if (o.k == 0) throw usage_error("--top-k must be at least 1");
  if (o.grids && o.data.path.empty()) throw usage_error("--grids needs --data (the images the activations were made from)");
  const std::string emb_source = o.embedding_source.empty() ? o.inputs[0] : o.embedding_source;
  if (!o.embedding.empty() && is_model(emb_source) && o.data.path.empty())
    throw usage_error("an embedding from a model needs --data");
  for (const auto& in : o.inputs)
    if (in == "-" && !o.embedding.empty() && emb_source == "-")
      throw usage_error("the embedding source is read again: give --embedding-source (a store or a model) when the input is a stream");

  // The id list is read once (it may be a pipe); the children get a copy in a file.
  std::optional<temp_file> ids_copy;
  nlohmann::json ids_record = nullptr;
  if (!o.data.ids.empty()) {
    if (!live) throw usage_error("--ids is for models run live; select the rows of a store when dumping it");
    const auto list = read_id_list(o.data.ids, dataset::open(o.data)->size());
    ids_record = describe_id_list(o.data.ids, list);
    std::string text;
    for (auto v : list) text += std::to_string(v) + "\n";
    ids_copy.emplace(text);
    o.data.ids = ids_copy->path;
  }
  std::vector<network> nets;
  for (std::size_t k = 0; k < o.inputs.size(); ++k) {
    nets.push_back(top_inputs(o.names[k], o.inputs[k], o));
    if (o.layers.empty())
      for (const auto& l : nets[0].layers) o.layers.push_back(l.name);
  }
  std::map<std::int64_t, std::vector<float>> emb;
  if (!o.embedding.empty()) {
    std::set<std::int64_t> ids;
    for (const auto& n : nets)
      for (const auto& l : n.layers)
        for (std::size_t u = 0; u < l.shape[0]; ++u)
          for (const auto& e : l.top->result(u)) ids.insert(e.id);
    emb = embeddings(emb_source, o.embedding, ids, o);
  }
  nlohmann::json params = {
      {"status", status},
      {"top_k", o.k},
      {"rank", o.rank},
      {"layers", o.layers},
      {"names", std::vector<std::string>(o.names.begin(), o.names.begin() + static_cast<long>(o.inputs.size()))},
      {"embedding", o.embedding.empty() ? nlohmann::json(nullptr)
                                        : nlohmann::json{{"layer", o.embedding}, {"source", emb_source},
                                                         {"pooling", "spatial mean of [C, H, W] maps"}}},
      {"facets", {{"kmax", o.kmax}, {"rule", o.facet_rule}, {"min_silhouette", o.min_silhouette}, {"seed", o.seed}}},
      {"sparsity", o.thresholds.empty() ? nlohmann::json{{"threshold", o.threshold}}
                                        : nlohmann::json{{"netdissect_thresholds", o.thresholds}}},
      {"dead_eps", o.dead_eps},
      {"grids", {{"units", o.grids}, {"crop", o.crop}}},
      {"ids", ids_record}};
  if (!o.data.path.empty()) params["data"] = dataset::open(o.data)->describe();
  nlohmann::json sources = nlohmann::json::array(), shapes = nlohmann::json::object();
  for (const auto& n : nets) sources.push_back(source_identity(n.provenance));
  for (const auto& l : nets[0].layers) shapes[l.name] = l.shape;
  const nlohmann::json key{{"params", params}, {"sources", sources}, {"shapes", shapes},
                           {"embedding_source", o.embedding.empty() ? nlohmann::json(nullptr) : identity_of(emb_source)}};
  return {key, std::move(nets), std::move(emb)};
}

/// The accumulator states of diversity.h5: per network and layer its top-K and activity, per
/// network the labels of the ids in its top-Ks, the embeddings of those ids, and as the attribute
/// "networks" each network's input, rows and input provenance.
void save_states(hid_t h5, const diversity_result& r, const std::string& file) {
  nlohmann::json meta = nlohmann::json::array();
  for (const auto& n : r.nets) {
    meta.push_back({{"network", n.name}, {"input", n.input}, {"rows", n.rows}, {"provenance", n.provenance}});
    std::map<std::int64_t, std::int64_t> labels;
    for (const auto& l : n.layers) {
      const std::string g = n.name + "/" + l.name;
      io::write_state(h5, g + "/topk", l.top->save(), file);
      io::write_state(h5, g + "/activity", l.activity->save(), file);
      for (std::size_t u = 0; u < l.shape[0]; ++u)
        for (const auto& e : l.top->result(u)) labels.emplace(e.id, n.labels.at(e.id));
    }
    stats::state s;
    s.kind = "labels";
    xt::xarray<double> ids = xt::zeros<double>({labels.size()}), labs = ids;
    std::size_t i = 0;
    for (const auto& [id, lab] : labels) ids(i) = static_cast<double>(id), labs(i++) = static_cast<double>(lab);
    s.arrays = {{"id", ids}, {"label", labs}};
    io::write_state(h5, n.name + "/labels", s, file);
  }
  if (!r.emb.empty()) {
    stats::state s;
    s.kind = "embedding";
    const std::size_t D = r.emb.begin()->second.size();
    xt::xarray<double> ids = xt::zeros<double>({r.emb.size()}), x = xt::zeros<double>({r.emb.size(), D});
    std::size_t i = 0;
    for (const auto& [id, e] : r.emb) {
      ids(i) = static_cast<double>(id);
      std::copy(e.begin(), e.end(), x.data() + i++ * D);
    }
    s.arrays = {{"id", ids}, {"vector", x}};
    io::write_state(h5, "embedding", s, file);
  }
  io::h5::write_attribute(h5, "networks", meta.dump(), file);
}

diversity_result load_states(hid_t h5, const nlohmann::json& key, const std::string& file) {
  diversity_result r{key, {}, {}};
  for (const auto& m : nlohmann::json::parse(io::h5::read_string_attribute(h5, "networks", file))) {
    network n{m.at("network"), m.at("input"), {}, m.at("rows"), {}, m.at("provenance")};
    for (const auto& name : key.at("params").at("layers")) {
      const std::string g = n.name + "/" + name.get<std::string>();
      n.layers.push_back({name, key.at("shapes").at(name.get<std::string>()), 0,
                          stats::topk_units::load(io::read_state(h5, g + "/topk", file)),
                          stats::unit_activity::load(io::read_state(h5, g + "/activity", file))});
    }
    const auto s = io::read_state(h5, n.name + "/labels", file);
    for (std::size_t i = 0; i < s.array("id").size(); ++i)
      n.labels[static_cast<std::int64_t>(s.array("id")(i))] = static_cast<std::int64_t>(s.array("label")(i));
    r.nets.push_back(std::move(n));
  }
  if (io::h5::exists(h5, "embedding")) {
    const auto s = io::read_state(h5, "embedding", file);
    const auto& x = s.array("vector");
    const std::size_t D = x.shape()[1];
    for (std::size_t i = 0; i < s.array("id").size(); ++i)
      r.emb[static_cast<std::int64_t>(s.array("id")(i))] = std::vector<float>(x.data() + i * D, x.data() + (i + 1) * D);
  }
  return r;
}

/// Adds shard `b` to `a`: top-Ks and activity merge exactly; labels and embeddings of disjoint ids
/// join.
void merge_states(diversity_result& a, const diversity_result& b) {
  for (std::size_t k = 0; k < a.nets.size(); ++k) {
    a.nets[k].rows += b.nets[k].rows;
    for (std::size_t l = 0; l < a.nets[k].layers.size(); ++l) {
      a.nets[k].layers[l].top->merge(*b.nets[k].layers[l].top);
      a.nets[k].layers[l].activity->merge(*b.nets[k].layers[l].activity);
    }
    a.nets[k].labels.insert(b.nets[k].labels.begin(), b.nets[k].labels.end());
  }
  a.emb.insert(b.emb.begin(), b.emb.end());
}

/// The options a run's tables depend on, from its recorded parameters (for a merge).
diversity_options options_of(const nlohmann::json& p) {
  diversity_options o;
  o.k = p.at("top_k");
  o.rank = p.at("rank");
  o.layers = p.at("layers").get<std::vector<std::string>>();
  o.names = p.at("names").get<std::vector<std::string>>();
  o.inputs = o.names;
  if (!p.at("embedding").is_null()) o.embedding = p["embedding"].at("layer");
  o.kmax = p.at("facets").at("kmax");
  o.facet_rule = p["facets"].at("rule");
  o.min_silhouette = p["facets"].at("min_silhouette");
  o.seed = p["facets"].at("seed");
  o.dead_eps = p.at("dead_eps");
  o.grids = p.at("grids").at("units");
  o.crop = p["grids"].at("crop");
  if (p.contains("data")) {
    o.data.path = p["data"].at("path");
    o.data.format = p["data"].at("format");
    o.data.split = p["data"].value("split", "test");
  }
  return o;
}

/// The tables, diversity.h5 (states, partial record), image grids and provenance of `r`.
void write_diversity(diversity_result& r, const diversity_options& o, nlohmann::json rec, const partial_info& part) {
  auto& nets = r.nets;
  const auto& emb = r.emb;
  for (const auto& n : nets)
    if (n.rows < o.k)
      throw io_error(quote_name(n.input) + ": K = " + std::to_string(o.k) + " but only " + std::to_string(n.rows) +
                     " inputs (lower --top-k)");
  output_folder out(o.output, {"grids"});
  std::unique_ptr<dataset> data;
  if (o.grids) data = dataset::open(o.data);

  stats::facet_params fp;
  fp.kmax = o.kmax;
  fp.rule = o.facet_rule == "bic" ? stats::facet_rule::bic : stats::facet_rule::silhouette;
  fp.min_silhouette = o.min_silhouette;
  fp.kmeans.seed = o.seed;
  std::ostringstream units, layers;
  units << "network,layer,unit,k,distinct_labels,label_entropy,mean_cosine_distance,mean_l2_distance,facets,"
           "facets_silhouette,facets_bic,threshold,fraction_above,max,dead,status\n";
  layers << "network,layer,units,inputs,dead,mean_distinct_labels,median_distinct_labels,mean_label_entropy,"
            "mean_cosine_distance,median_cosine_distance,mean_l2_distance,mean_facets,mean_fraction_above,status\n";
  // Per layer, per network: the layer means compared in differences.csv (measure names below).
  static constexpr const char* measures[] = {"mean_distinct_labels", "mean_label_entropy", "mean_cosine_distance",
                                             "mean_l2_distance",     "mean_facets",        "mean_fraction_above",
                                             "dead"};
  std::map<std::string, std::vector<std::array<double, std::size(measures)>>> summary;
  const std::string h5name = out.path("diversity.h5");
  io::h5::handle h5(io::h5::check(H5Fcreate(h5name.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), o.output + "/diversity.h5",
                                  "cannot create"));
  for (const auto& n : nets)
    for (const auto& l : n.layers) {
      const std::size_t U = l.shape[0];
      std::vector<double> distinct(U), entropy(U), cosd(U, std::nan("")), l2(U, std::nan("")), facets(U, std::nan("")),
          frac(U);
      std::size_t dead = 0;
      for (std::size_t u = 0; u < U; ++u) {
        const auto top = l.top->result(u);
        std::vector<std::int64_t> labs;
        for (const auto& e : top) labs.push_back(n.labels.at(e.id));
        const auto ld = stats::label_diversity(labs);
        distinct[u] = static_cast<double>(ld.distinct);
        entropy[u] = ld.entropy;
        frac[u] = l.activity->fraction_above(u);
        const bool is_dead = l.activity->dead(u, o.dead_eps);
        dead += is_dead;
        std::string fs, fb;
        if (!emb.empty() && top.size() >= 2) {
          const std::size_t D = emb.begin()->second.size();
          xt::xtensor<double, 2> x = xt::zeros<double>({top.size(), D});
          for (std::size_t j = 0; j < top.size(); ++j) {
            const auto& e = emb.at(top[j].id);
            std::copy(e.begin(), e.end(), x.data() + j * D);
          }
          bool zero_row = false;  // an all-zero embedding has no cosine: L2 only
          for (std::size_t j = 0; j < top.size() && !zero_row; ++j)
            zero_row = std::all_of(x.data() + j * D, x.data() + (j + 1) * D, [](double v) { return v == 0; });
          if (!zero_row) {
            const auto ed = stats::embedding_diversity(x);
            cosd[u] = ed.mean_cosine;
            l2[u] = ed.mean_l2;
          } else {
            double s = 0;
            for (std::size_t i = 0; i < top.size(); ++i)
              for (std::size_t j = i + 1; j < top.size(); ++j) {
                double d2 = 0;
                for (std::size_t c = 0; c < D; ++c) d2 += (x(i, c) - x(j, c)) * (x(i, c) - x(j, c));
                s += std::sqrt(d2);
              }
            l2[u] = s / static_cast<double>(top.size() * (top.size() - 1) / 2);
          }
          const auto f = stats::facets(x, fp);
          facets[u] = static_cast<double>(f.k);
          fs = std::to_string(f.k_silhouette);
          fb = std::to_string(f.k_bic);
        }
        units << n.name << "," << l.name << "," << u << "," << top.size() << "," << ld.distinct << "," << csv_number(ld.entropy) << ","
              << csv_number(cosd[u]) << "," << csv_number(l2[u]) << "," << csv_number(facets[u]) << "," << fs << "," << fb << ","
              << csv_number(l.activity->threshold(u)) << "," << csv_number(frac[u]) << "," << csv_number(l.activity->max(u)) << ","
              << is_dead << "," << status << "\n";
        if (u < o.grids)
          write_grid(out.path("grids/" + n.name + "_" + l.name + "_unit" + std::to_string(u) + ".png"), *data, top, l.shape, o.crop,
                     recorded_view(n.provenance));
      }
      layers << n.name << "," << l.name << "," << U << "," << n.rows << "," << dead << "," << csv_number(mean(distinct)) << ","
             << csv_number(median(distinct)) << "," << csv_number(mean(entropy)) << "," << csv_number(mean(cosd)) << ","
             << csv_number(median(cosd)) << "," << csv_number(mean(l2)) << "," << csv_number(mean(facets)) << ","
             << csv_number(mean(frac)) << "," << status << "\n";
      summary[l.name].push_back({mean(distinct), mean(entropy), mean(cosd), mean(l2), mean(facets), mean(frac),
                                 static_cast<double>(dead)});
      if (!o.common.quiet)
        std::fprintf(stderr, "diversity: %s %s: mean %.2f distinct labels of top-%zu, %zu dead of %zu units (%s)\n", n.name.c_str(),
                     l.name.c_str(), mean(distinct), o.k, dead, U, status);
    }

  save_states(h5.get(), r, h5name);
  write_partial(h5.get(), part, h5name);
  rec["params"] = r.key.at("params");
  rec["params"]["inputs"] = nets[0].rows;
  rec["params"]["shard"] = part.shard_record();
  rec["seeds"] = {{"kmeans", o.seed}};
  nlohmann::json inputs = nlohmann::json::array();
  for (const auto& n : nets) inputs.push_back({{"network", n.name}, {"input", n.input}, {"rows", n.rows}, {"provenance", n.provenance}});
  rec["finished"] = io::utc_now();
  const nlohmann::json prov{{"run", rec}, {"inputs", inputs}};
  io::h5::write_attribute(h5.get(), "provenance", prov.dump(), o.output + "/diversity.h5");
  h5.reset();
  out.write("provenance.json", prov.dump(2) + "\n");
  out.write("units.csv", units.str());
  out.write("layers.csv", layers.str());
  if (nets.size() == 2) {
    // S vs R per layer: R − S, so a negative difference is R responding to fewer kinds of input.
    std::ostringstream diff;
    const auto &a = nets[0].name, &b = nets[1].name;
    diff << "layer,measure," << a << "," << b << "," << b << "_minus_" << a << ",status\n";
    for (const auto& l : nets[0].layers) {
      const auto& v = summary.at(l.name);
      for (std::size_t m = 0; m < std::size(measures); ++m)
        diff << l.name << "," << measures[m] << "," << csv_number(v[0][m]) << "," << csv_number(v[1][m]) << ","
             << csv_number(v[1][m] - v[0][m]) << "," << status << "\n";
    }
    out.write("differences.csv", diff.str());
  }
  out.commit();
  if (!o.common.quiet)
    std::fprintf(stderr, "diversity: %llu inputs, %zu layers, %zu networks%s; wrote %s\n", static_cast<unsigned long long>(nets[0].rows),
                 nets[0].layers.size(), nets.size(),
                 part.whole() ? "" : (", shard " + std::to_string(part.shards[0]) + "/" + std::to_string(part.count)).c_str(),
                 o.output.c_str());
}

void run(const diversity_options& o, const nlohmann::json& rec, mpi_session* mpi) {
  if (!mpi) {
    auto r = compute(o);
    write_diversity(r, o, rec, partial_info::of("diversity", shard::parse(o.data.shard), r.key));
    return;
  }
  const auto images = mpi->gather([&] {
    const auto r = compute(o);
    return partial_image("diversity.h5", partial_info::of("diversity", shard::parse(o.data.shard), r.key), rec,
                         [&](hid_t h5) { save_states(h5, r, "diversity.h5"); });
  });
  if (mpi->root()) merge_images(images, mpi_step(*mpi), o.output, o.common.quiet);
}

}  // namespace

void merge_diversity(const std::vector<merge_part>& parts, const partial_info& whole, nlohmann::json rec, const std::string& output,
                     bool quiet) {
  auto o = options_of(whole.key.at("params"));
  o.output = output;
  o.common.quiet = quiet;
  auto r = load_states(parts[0].file.get(), whole.key, parts[0].name);
  for (std::size_t i = 1; i < parts.size(); ++i) merge_states(r, load_states(parts[i].file.get(), whole.key, parts[i].name));
  write_diversity(r, o, std::move(rec), whole);
}

int run_diversity(std::span<char*> args) {
  diversity_options o;
  CLI::App app{
      "Diversity (paper-spec §5, paper metric unconfirmed): per unit, the top-K inputs (by spatial max), how many\n"
      "classes they span and their entropy, their mean pairwise cosine and L2 distance in a fixed reference\n"
      "embedding, the number of clusters (facets) among them, the fraction of inputs that activate the unit,\n"
      "and dead units. The first input is S.\n\n"
      "Examples:\n"
      "  shapebias diversity S.pt R.pt --data /usr/share/datasets/fashion-mnist -l features.3,features.6 \\\n"
      "      --embedding classifier.1 --embedding-source S.pt -o diversity/\n"
      "  shapebias diversity S.h5 R.h5 --embedding layer4 --embedding-source S.h5 -o diversity/",
      "shapebias diversity"};
  app.add_option("inputs", o.inputs, "Stores (.h5) or streams ('-'), or TorchScript models run live on --data. First S, then R")
      ->required()->group("Input");
  app.add_option("--names", o.names, "Names of the networks, comma-separated")->delimiter(',')->group("Input")->capture_default_str();
  app.add_option("-l,--layers", o.layers, "Layers, comma-separated (default for stores: every [C, H, W] or [C] layer)")
      ->delimiter(',')->group("Input");
  add_data_options(app, o.data, true, "--data");
  app.get_option("--data")->description("The data set: models run on it; its labels and images (--grids) are used")->group("Input");
  app.add_option("-k,--top-k", o.k, "Inputs kept per unit")->group("Diversity")->capture_default_str();
  app.add_option("--rank", o.rank, "Rank inputs by the spatial max or the spatial mean of the unit's map")
      ->check(CLI::IsMember({"max", "mean"}))->group("Diversity")->capture_default_str();
  app.add_option("--embedding", o.embedding, "Reference embedding layer (e.g. S's penultimate layer); [C, H, W] maps are "
                                              "averaged over space")->group("Diversity");
  app.add_option("--embedding-source", o.embedding_source, "Store or model the embedding is read from [the first input]")
      ->group("Diversity");
  app.add_option("--kmax", o.kmax, "Facets: largest number of clusters tried")->check(CLI::Range(std::size_t{1}, std::size_t{64}))
      ->group("Diversity")->capture_default_str();
  app.add_option("--facet-rule", o.facet_rule, "Facets: choose k by mean silhouette (k = 1 below --min-silhouette) or BIC")
      ->check(CLI::IsMember({"silhouette", "bic"}))->group("Diversity")->capture_default_str();
  app.add_option("--min-silhouette", o.min_silhouette, "Facets: below this best silhouette, k = 1")->group("Diversity")
      ->capture_default_str();
  app.add_option("--seed", o.seed, "Seed of the k-means restarts")->group("Diversity")->capture_default_str();
  app.add_option("--threshold", o.threshold, "Sparsity: a unit responds to an input when its spatial max exceeds this")
      ->group("Sparsity")->capture_default_str();
  app.add_option("--thresholds", o.thresholds, "Sparsity: per-unit NetDissect thresholds from a 'shapebias dissect' output folder")
      ->group("Sparsity");
  app.add_option("--dead-eps", o.dead_eps, "A unit is dead when its largest spatial max over the data is at most this")
      ->group("Sparsity")->capture_default_str();
  app.add_option("--grids", o.grids, "Write image grids of the top-K inputs, cropped around the argmax, for the first N units "
                                     "of each layer (needs --data)")->group("Output")->capture_default_str();
  app.add_option("--grid-crop", o.crop, "Grid crop size in image pixels [half the preprocessed image]")->group("Output");
  app.add_option("-o,--output", o.output, "Output folder: units.csv, layers.csv, differences.csv (two networks: R - S per "
                                          "layer), diversity.h5 (top-K ids, activity), grids/, provenance.json")->required()->group("Output");
  add_shard_options(app, o.data.shard, o.mpi);
  add_common_options(app, o.common);
  if (!parse(app, args)) return 0;
  check_names(o.names, o.inputs.size(), "inputs");
  const auto rec = start_record("diversity", args);
  with_mpi(o.mpi, o.data.shard, [&](mpi_session* mpi) { run(o, rec, mpi); });
  return 0;
}

}  // namespace shapebias::tools
