// SPDX-License-Identifier: MIT
// `shapebias dissect`: the feature-level bias (paper-spec §4): NetDissect-Lite's procedure
// (peers.md §5.2) on a Broden-format probe set, for one network or an S/R pair, from models run
// live or from stores of their activations. Two passes over the activations (thresholds, then the
// tally) with memory that does not grow with the number of images. The statistics live in
// include/shapebias/stats/{quantile,tally}.hpp; the probe reader in common/broden.hpp.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include <xtensor/xview.hpp>

#include "common/broden.hpp"
#include "common/child.hpp"
#include "common/cli.hpp"
#include "common/csv.hpp"
#include "common/data_cli.hpp"
#include "common/endpoints.hpp"
#include "common/merge.hpp"
#include "common/mpi.hpp"
#include "common/output_folder.hpp"
#include "common/partial.hpp"
#include "common/provenance.hpp"
#include "common/rng.hpp"
#include "shapebias/io/provenance.hpp"
#include "shapebias/io/state.hpp"
#include "shapebias/stats/quantile.hpp"
#include "shapebias/stats/tally.hpp"

namespace shapebias::tools {
namespace {

struct dissect_options {
  common_options common;
  std::vector<std::string> inputs, names{"S", "R"}, layers, categories;
  std::string probe;
  data_options data;  // preprocessing of the probe images for models run live
  double top = 0.005;
  std::string quantile = "sketch";
  std::size_t resolution = stats::quantile_sketch::default_resolution;
  std::uint64_t seed = 1;
  std::string rule = "lite";
  std::vector<double> iou_thresholds{0.04, 0.01, 0.0};
  std::string thresholds;  // a threshold pass (or dissect output) whose thresholds to tally at
  std::string output;
  bool mpi = false;
};

struct layer_result {
  std::string name;
  std::vector<std::size_t> shape;  // [C, H, W]
  std::size_t index = 0;           // in the source's header
  std::optional<stats::exact_quantiles> exact;
  std::optional<stats::quantile_sketch> sketch;
  std::vector<float> thresholds;
  double rank_error = 0;  // the sketch's largest guaranteed rank error over units
  std::optional<stats::iou_tally> tally;
  std::vector<stats::tally_best> best;
};

struct network {
  std::string name, input;
  std::vector<layer_result> layers;
  std::uint64_t rows = 0, fingerprint = 0;
  nlohmann::json provenance;
};

/// Runs `fn` on the activations of `input`: a store, or a model run live on the probe images
/// (only those with labels, as --ids of a child `shapebias dump … -o -`).
void each_source(const std::string& input, const dissect_options& o, const std::string& ids_file,
                 const std::function<void(io::batch_source&)>& fn) {
  auto d = o.data;
  d.path = o.probe;
  d.format = "broden";
  d.ids = ids_file;
  with_activations(input, d, o.common, o.layers, fn);
}

/// The rows of a batch that are labelled probe images of the shard. Refuses ids outside the probe set.
std::vector<std::size_t> probe_rows(const io::batch& b, const probe_set& ps, const std::string& input, const shard& sh) {
  std::vector<std::size_t> keep;
  for (std::size_t r = 0; r < b.rows(); ++r) {
    const auto id = b.ids[r];
    if (id < 0 || static_cast<std::size_t>(id) >= ps.size())
      throw io_error(quote_name(input) + ": input id " + std::to_string(id) + " is not an image of the probe set " +
                     quote_name(ps.path()) + " (" + std::to_string(ps.size()) + " images); dump the activations with "
                     "--data " + ps.path());
    if (ps.has_labels(static_cast<std::size_t>(id)) && sh.contains(id)) keep.push_back(r);
  }
  return keep;
}

/// Rows `keep` of a layer's batch [B, C, H, W]: the batch itself when every row is kept, else a
/// contiguous copy in `copy`.
const xt::xarray<float>& kept(const xt::xarray<float>& all, const std::vector<std::size_t>& keep, xt::xarray<float>& copy) {
  if (keep.size() == all.shape()[0]) return all;
  copy = xt::view(all, xt::keep(keep), xt::all(), xt::all(), xt::all());
  return copy;
}

/// The layers of `net` found in a source's header (every [C, H, W] layer by default), each with
/// its quantile accumulator.
void add_layers(network& net, const io::header& h, const dissect_options& o) {
  std::vector<std::string> names = o.layers;
  if (names.empty())
    for (const auto& l : h.layers)
      if (l.shape.size() == 3) names.push_back(l.name);
  if (names.empty()) throw io_error(quote_name(net.input) + ": no layer with [C, H, W] maps to dissect");
  for (const auto& n : names) {
    const auto i = h.find(n);
    if (!i) throw io_error(quote_name(net.input) + ": no layer '" + n + "'");
    const auto& s = h.layers[*i].shape;
    if (s.size() != 3)
      throw io_error(quote_name(net.input) + ": layer '" + n + "' has rows of shape " + stats::detail::shape_string(s) +
                     "; dissection needs [C, H, W] maps with spatial axes");
    layer_result l{n, s, *i, std::nullopt, std::nullopt, {}, 0, std::nullopt, {}};
    if (o.quantile == "exact") l.exact.emplace(s[0]);
    else l.sketch.emplace(s[0], o.resolution, o.seed);
    net.layers.push_back(std::move(l));
  }
}

/// Pass 1: per-unit quantile accumulators over the labelled probe images of this shard.
void quantile_pass(network& net, const dissect_options& o, const probe_set& ps, const std::string& ids_file,
                   std::size_t labelled) {
  const auto threads = static_cast<unsigned>(resolved_threads(o.common.threads));
  const auto sh = shard::parse(o.data.shard);
  progress bar("dissect " + net.name + " thresholds", labelled, o.common.quiet);
  each_source(net.input, o, ids_file, [&](io::batch_source& src) {
    add_layers(net, src.header(), o);
    while (auto b = src.next()) {
      const auto keep = probe_rows(*b, ps, net.input, sh);
      if (keep.empty()) continue;
      for (auto r : keep) net.fingerprint += splitmix64(static_cast<std::uint64_t>(b->ids[r]));
      xt::xarray<float> copy;
      for (auto& l : net.layers) {
        const auto& x = kept(b->data[l.index], keep, copy);
        try {
          if (l.exact) l.exact->update(x, threads);
          else l.sketch->update(x, threads);
        } catch (const std::domain_error& e) {
          throw std::runtime_error(quote_name(net.input) + " layer '" + l.name + "': " + e.what());
        }
      }
      net.rows += keep.size();
      bar.update(net.rows);
    }
    net.provenance = parse_log(src.header().provenance);
  });
  bar.finish();
  if (net.rows == 0)
    throw io_error(quote_name(net.input) + ": holds none of the labelled images of " + quote_name(ps.path()) +
                   (sh.whole() ? "" : " in shard " + sh.to_string()));
}

/// The sketch's largest guaranteed rank error over each layer's units (0 for exact quantiles).
void set_rank_errors(network& net) {
  for (auto& l : net.layers) {
    l.rank_error = 0;
    for (std::size_t u = 0; l.sketch && u < l.shape[0]; ++u) l.rank_error = std::max(l.rank_error, l.sketch->rank_error_bound(u));
  }
}

/// Per-unit thresholds from the quantile accumulators (NetDissect-Lite's level), and the sketch's
/// rank error.
void set_thresholds(network& net, const dissect_options& o) {
  const auto threads = static_cast<unsigned>(resolved_threads(o.common.threads));
  // NetDissect-Lite's level: readout element int(1000·(1 − top) − 1) of 1000, i.e. 994/999.
  const double level = std::floor(1000.0 * (1.0 - o.top) - 1.0) / 999.0;
  for (auto& l : net.layers) {
    l.thresholds.resize(l.shape[0]);
    stats::detail::parallel_for(l.shape[0], threads, [&](std::size_t b, std::size_t e) {
      for (std::size_t u = b; u < e; ++u)
        l.thresholds[u] = static_cast<float>(l.exact ? l.exact->quantile_hazen(u, level) : l.sketch->threshold(u, o.top));
    });
  }
  set_rank_errors(net);
}

/// Pass 2: the tally of this shard's labelled probe images at the thresholds. After pass 1 in this
/// process (`checked`), the images must be the same.
void tally_pass(network& net, const dissect_options& o, const probe_set& ps, const std::string& ids_file, std::size_t labelled,
                bool checked) {
  const auto threads = static_cast<unsigned>(resolved_threads(o.common.threads));
  const auto sh = shard::parse(o.data.shard);
  std::uint64_t rows = 0, fingerprint = 0;
  progress bar("dissect " + net.name + " tally", labelled, o.common.quiet);
  each_source(net.input, o, ids_file, [&](io::batch_source& src) {
    for (auto& l : net.layers) {
      const auto i = src.header().find(l.name);
      if (!i || src.header().layers[*i].shape != l.shape)
        throw io_error(quote_name(net.input) + ": no layer '" + l.name + "' of shape " + stats::detail::shape_string(l.shape) +
                       " (the thresholds' layer)");
      l.index = *i;
    }
    while (auto b = src.next()) {
      const auto keep = probe_rows(*b, ps, net.input, sh);
      if (keep.empty()) continue;
      std::vector<probe_labels> segs(keep.size());
      std::exception_ptr failed;
      stats::detail::parallel_for(keep.size(), threads, [&](std::size_t s, std::size_t e) {
        try {
          for (std::size_t j = s; j < e; ++j) segs[j] = ps.labels_of(static_cast<std::size_t>(b->ids[keep[j]]));
        } catch (...) {
          failed = std::current_exception();  // the first failing chunk's error is enough
        }
      });
      if (failed) std::rethrow_exception(failed);
      for (auto r : keep) fingerprint += splitmix64(static_cast<std::uint64_t>(b->ids[r]));
      for (auto& l : net.layers) {
        const auto& all = b->data[l.index];
        const std::size_t per = l.shape[0] * l.shape[1] * l.shape[2];
        // Runs of images with one segmentation size go to the tally together (one thread start).
        for (std::size_t j0 = 0; j0 < keep.size();) {
          std::size_t j1 = j0;
          std::vector<stats::tally_image> run;
          for (; j1 < keep.size() && segs[j1].sh == segs[j0].sh && segs[j1].sw == segs[j0].sw; ++j1) {
            stats::tally_image im{all.data() + keep[j1] * per, {}, segs[j1].image_labels};
            for (const auto& v : segs[j1].layers) im.label_layers.push_back(v.data());
            run.push_back(std::move(im));
          }
          if (segs[j0].sh < l.shape[1] || segs[j0].sw < l.shape[2])
            throw io_error(quote_name(ps.image_path(static_cast<std::size_t>(b->ids[keep[j0]]))) + ": segmentation " +
                           std::to_string(segs[j0].sh) + "x" + std::to_string(segs[j0].sw) + " is smaller than layer '" +
                           l.name + "' maps " + std::to_string(l.shape[1]) + "x" + std::to_string(l.shape[2]));
          l.tally->update_images(run, l.shape[1], l.shape[2], l.thresholds.data(), segs[j0].sh, segs[j0].sw, threads);
          j0 = j1;
        }
      }
      rows += keep.size();
      bar.update(rows);
    }
    if (!checked) net.provenance = parse_log(src.header().provenance);
  });
  bar.finish();
  if (checked && (rows != net.rows || fingerprint != net.fingerprint))
    throw std::runtime_error(quote_name(net.input) + ": the second pass read other images than the first (" + std::to_string(rows) +
                             " vs " + std::to_string(net.rows) + ")");
  if (rows == 0)
    throw io_error(quote_name(net.input) + ": holds none of the labelled images of " + quote_name(ps.path()) +
                   (sh.whole() ? "" : " in shard " + sh.to_string()));
  net.rows = rows;
  net.fingerprint = fingerprint;
}

void set_best(network& net) {
  for (auto& l : net.layers) {
    l.best.clear();
    for (std::size_t u = 0; u < l.shape[0]; ++u) l.best.push_back(l.tally->best(u));
  }
}

// ---------------------------------------------------------------------------------------------
// Tables

double median(std::vector<double> v) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/// A unit counts as a detector at threshold t when it is not dead and its best IoU ≥ t.
bool detector(const stats::tally_best& b, double t) { return !b.dead && b.iou >= t; }

struct tables {
  std::ostringstream units, layers, concepts, concept_units, differences;
};

void write_tables(const std::vector<network>& nets, const probe_set& ps, const dissect_options& o, tables& t) {
  const auto& cats = ps.categories();
  const auto& names = ps.label_names();
  const std::size_t C = cats.size();

  t.units << "network,layer,unit,threshold,label,category,iou,dead";
  for (const auto& c : cats) t.units << "," << c << "_label," << c << "_iou";
  t.units << "\n";
  for (const auto& n : nets)
    for (const auto& l : n.layers) {
      const auto m = l.tally->iou_matrix();
      for (std::size_t u = 0; u < l.best.size(); ++u) {
        const auto& b = l.best[u];
        t.units << n.name << "," << l.name << "," << u << "," << csv_number(l.thresholds[u]) << ","
                << (b.dead ? "" : csv_text(names[static_cast<std::size_t>(b.label)])) << ","
                << (b.dead ? "" : cats[static_cast<std::size_t>(b.category)]) << "," << csv_number(b.iou) << "," << b.dead;
        for (std::size_t c = 0; c < C; ++c) {  // the best label within each category (lowest label on ties)
          std::size_t arg = 0;
          double v = 0;
          for (std::size_t lab = 1; lab < ps.labels(); ++lab)
            if (static_cast<std::size_t>(ps.primary()[lab]) == c && m(u, lab) > v) v = m(u, lab), arg = lab;
          t.units << "," << (arg ? csv_text(names[arg]) : "") << "," << csv_number(v);
        }
        t.units << "\n";
      }
    }

  // Per layer and category: detectors, their mean and median IoU and unique concepts.
  t.layers << "network,layer,units,dead,iou_threshold,category,detectors,mean_iou,median_iou,unique_concepts\n";
  // Per network: unique concepts per category over all layers; per concept: units labelled with it.
  t.concepts << "network,iou_threshold,category,unique_concepts,concepts\n";
  // count[threshold][layer or "(all)"][network][label]
  std::map<double, std::map<std::string, std::vector<std::vector<std::size_t>>>> count;
  for (std::size_t k = 0; k < nets.size(); ++k) {
    const auto& n = nets[k];
    for (double th : o.iou_thresholds) {
      std::vector<std::set<std::size_t>> net_concepts(C);
      for (const auto& l : n.layers) {
        auto& per = count[th][l.name];
        auto& all = count[th]["(all)"];
        per.resize(nets.size(), std::vector<std::size_t>(ps.labels(), 0));
        all.resize(nets.size(), std::vector<std::size_t>(ps.labels(), 0));
        std::vector<std::vector<double>> ious(C);
        std::vector<std::set<std::size_t>> concepts(C);
        std::size_t dead = 0;
        for (const auto& b : l.best) {
          dead += b.dead;
          if (!detector(b, th)) continue;
          const auto c = static_cast<std::size_t>(b.category), lab = static_cast<std::size_t>(b.label);
          ious[c].push_back(b.iou);
          concepts[c].insert(lab);
          net_concepts[c].insert(lab);
          ++per[k][lab];
          ++all[k][lab];
        }
        std::size_t total = 0;
        std::set<std::size_t> every;
        std::vector<double> every_iou;
        for (std::size_t c = 0; c < C; ++c) {
          double s = 0;
          for (double v : ious[c]) s += v;
          t.layers << n.name << "," << l.name << "," << l.best.size() << "," << dead << "," << csv_number(th) << "," << cats[c]
                   << "," << ious[c].size() << "," << csv_number(ious[c].empty() ? std::nan("") : s / static_cast<double>(ious[c].size()))
                   << "," << csv_number(median(ious[c])) << "," << concepts[c].size() << "\n";
          total += ious[c].size();
          every.insert(concepts[c].begin(), concepts[c].end());
          every_iou.insert(every_iou.end(), ious[c].begin(), ious[c].end());
        }
        double s = 0;
        for (double v : every_iou) s += v;
        t.layers << n.name << "," << l.name << "," << l.best.size() << "," << dead << "," << csv_number(th) << ",(all),"
                 << total << "," << csv_number(every_iou.empty() ? std::nan("") : s / static_cast<double>(every_iou.size()))
                 << "," << csv_number(median(every_iou)) << "," << every.size() << "\n";
        if (!o.common.quiet && th == o.iou_thresholds.front())
          std::fprintf(stderr, "dissect: %s %s: %zu/%zu units with IoU >= %g, covering %zu unique concepts\n", n.name.c_str(),
                       l.name.c_str(), total, l.best.size(), th, every.size());
      }
      for (std::size_t c = 0; c < C; ++c) {
        std::string list;
        for (auto lab : net_concepts[c]) list += (list.empty() ? "" : ";") + names[lab];
        t.concepts << n.name << "," << csv_number(th) << "," << cats[c] << "," << net_concepts[c].size() << "," << csv_text(list)
                   << "\n";
      }
    }
  }

  // Aligned concept axes: every concept any network labels a unit with, units per network.
  t.concept_units << "iou_threshold,layer,category,concept";
  for (const auto& n : nets) t.concept_units << "," << n.name;
  if (nets.size() == 2) t.concept_units << "," << nets[0].name << "_minus_" << nets[1].name;
  t.concept_units << "\n";
  for (double th : o.iou_thresholds)
    for (const auto& [layer, per] : count[th])
      for (std::size_t c = 0; c < C; ++c)
        for (std::size_t lab = 1; lab < ps.labels(); ++lab) {
          if (static_cast<std::size_t>(ps.primary()[lab]) != c) continue;
          bool any = false;
          for (const auto& v : per) any = any || v[lab] > 0;
          if (!any) continue;
          t.concept_units << csv_number(th) << "," << layer << "," << cats[c] << "," << csv_text(names[lab]);
          for (const auto& v : per) t.concept_units << "," << v[lab];
          if (nets.size() == 2) t.concept_units << "," << static_cast<long long>(per[0][lab]) - static_cast<long long>(per[1][lab]);
          t.concept_units << "\n";
        }

  // S − R: detectors per category and layer (and over all layers), and unique concepts.
  if (nets.size() != 2) return;
  const auto& a = nets[0].name;
  const auto& b = nets[1].name;
  t.differences << "iou_threshold,layer,category," << a << "_detectors," << b << "_detectors," << a << "_minus_" << b
                << "_detectors," << a << "_concepts," << b << "_concepts," << a << "_minus_" << b << "_concepts\n";
  for (double th : o.iou_thresholds) {
    std::vector<std::string> order;
    for (const auto& l : nets[0].layers) order.push_back(l.name);
    order.push_back("(all)");
    for (const auto& layer : order) {
      const auto& per = count[th][layer];
      for (std::size_t c = 0; c < C; ++c) {
        long long d[2] = {0, 0}, u[2] = {0, 0};
        for (std::size_t k = 0; k < 2; ++k)
          for (std::size_t lab = 1; lab < ps.labels(); ++lab)
            if (static_cast<std::size_t>(ps.primary()[lab]) == c && per[k][lab]) {
              d[k] += static_cast<long long>(per[k][lab]);
              ++u[k];
            }
        t.differences << csv_number(th) << "," << layer << "," << cats[c] << "," << d[0] << "," << d[1] << "," << d[0] - d[1]
                      << "," << u[0] << "," << u[1] << "," << u[0] - u[1] << "\n";
      }
    }
  }
}

void start_tallies(network& net, const dissect_options& o, const probe_set& ps) {
  for (auto& l : net.layers)
    l.tally.emplace(l.shape[0], ps.labels(), ps.categories().size(), ps.primary(), stats::parse_union_rule(o.rule));
}

/// dissect.h5's accumulators: the concept axis; per network and layer its quantile accumulator (when
/// it has one) and thresholds (and once tallied its tally, IoU matrix and labels); and as the
/// attribute "networks" each network's input, rows, id fingerprint and input provenance.
void save_networks(hid_t h5, const std::string& shown, const std::vector<network>& nets, const probe_set& ps, bool tallied) {
  stats::state concepts;  // the concept axis, shared by every network and layer
  concepts.kind = "concepts";
  xt::xarray<double> primary = xt::zeros<double>({ps.labels()});
  for (std::size_t l = 0; l < ps.labels(); ++l) primary(l) = ps.primary()[l];
  concepts.arrays = {{"primary_category", primary}};
  std::string names, cats;
  for (const auto& n : ps.label_names()) names += (names.empty() ? "" : "\n") + n;
  for (const auto& c : ps.categories()) cats += (cats.empty() ? "" : "\n") + c;
  concepts.text = {{"names", names}, {"categories", cats}};
  io::write_state(h5, "concepts", concepts, shown);
  nlohmann::json meta = nlohmann::json::array();
  for (const auto& n : nets) {
    meta.push_back({{"network", n.name}, {"input", n.input}, {"rows", n.rows}, {"fingerprint", n.fingerprint},
                    {"provenance", n.provenance}});
    for (const auto& l : n.layers) {
      const std::string g = n.name + "/" + l.name;
      stats::state r;
      r.kind = "dissection";
      const std::size_t U = l.shape[0];
      xt::xarray<double> th = xt::zeros<double>({U}), bl = th, bi = th, dead = th;
      for (std::size_t u = 0; u < l.thresholds.size(); ++u) th(u) = l.thresholds[u];
      r.arrays = {{"threshold", th}};
      if (tallied) {
        for (std::size_t u = 0; u < U; ++u) {
          bl(u) = l.best[u].label;
          bi(u) = l.best[u].iou;
          dead(u) = l.best[u].dead;
        }
        r.arrays.insert({{"iou", l.tally->iou_matrix()}, {"best_label", bl}, {"best_iou", bi}, {"dead", dead}});
        io::write_state(h5, g + "/tally", l.tally->save(), shown);
      }
      if (!l.thresholds.empty()) io::write_state(h5, g + "/result", r, shown);  // a shard's pass 1 has none
      if (l.exact || l.sketch) io::write_state(h5, g + "/quantile", l.exact ? l.exact->save() : l.sketch->save(), shown);
    }
  }
  io::h5::write_attribute(h5, "networks", meta.dump(), shown);
}

/// The networks saved by save_networks, with the settings `o` (the run's); tallies when `tallied`.
std::vector<network> load_networks(hid_t h5, const std::string& shown, const nlohmann::json& key, const dissect_options& o,
                                   bool tallied) {
  std::vector<network> nets;
  const auto meta = nlohmann::json::parse(io::h5::read_string_attribute(h5, "networks", shown));
  for (const auto& m : meta) {
    network n{m.at("network"), m.at("input"), {}, m.at("rows"), m.at("fingerprint"), m.at("provenance")};
    for (const auto& name : o.layers) {
      const std::string g = n.name + "/" + name;
      layer_result l{name, key.at("shapes").at(name), 0, std::nullopt, std::nullopt, {}, 0, std::nullopt, {}};
      if (io::h5::exists(h5, g + "/quantile")) {  // MPI ranks but 0 send tallies without them
        const auto q = io::read_state(h5, g + "/quantile", shown);
        if (o.quantile == "exact") l.exact = stats::exact_quantiles::load(q);
        else l.sketch = stats::quantile_sketch::load(q);
      }
      if (tallied) {
        l.tally = stats::iou_tally::load(io::read_state(h5, g + "/tally", shown));
        const auto r = io::read_state(h5, g + "/result", shown);
        l.thresholds.assign(r.array("threshold").begin(), r.array("threshold").end());
      }
      n.layers.push_back(std::move(l));
    }
    nets.push_back(std::move(n));
  }
  return nets;
}

/// Adds the accumulators of `b` (another shard of the same run) to `a`: once tallied, the tallies
/// (every shard tallied at the same thresholds: `a` keeps its quantile accumulators); before, the
/// quantile accumulators.
void merge_networks(std::vector<network>& a, const std::vector<network>& b) {
  for (std::size_t k = 0; k < a.size(); ++k) {
    a[k].rows += b[k].rows;
    a[k].fingerprint += b[k].fingerprint;
    for (std::size_t l = 0; l < a[k].layers.size(); ++l) {
      auto& x = a[k].layers[l];
      const auto& y = b[k].layers[l];
      if (x.tally) x.tally->merge(*y.tally);
      else if (x.exact) x.exact->merge(*y.exact);
      else x.sketch->merge(*y.sketch);
    }
  }
}

/// The parameters of a run, as recorded and as compared between shards.
nlohmann::json settings_of(const dissect_options& o, const probe_set& ps, bool live) {
  nlohmann::json p = {{"probe", ps.describe()},
                      {"layers", o.layers},
                      {"names", std::vector<std::string>(o.names.begin(), o.names.begin() + static_cast<long>(o.inputs.size()))},
                      {"top", o.top},
                      {"level", std::floor(1000.0 * (1.0 - o.top) - 1.0) / 999.0},
                      {"quantile", o.quantile == "exact" ? nlohmann::json{{"mode", "exact"}, {"variant", "hazen"}}
                                                          : nlohmann::json{{"mode", "sketch"}, {"resolution", o.resolution}, {"seed", o.seed}}},
                      {"union", o.rule},
                      {"iou_thresholds", o.iou_thresholds},
                      {"detector_rule", "best IoU >= threshold, dead units (IoU 0 for every concept) excluded"},
                      {"upsampling", "bilinear, pixel-centre alignment, edge clamping (imresize mode 'F')"}};
  if (live)
    p["data"] = {{"channels", o.data.channels}, {"resize", o.data.resize}, {"crop", o.data.crop}, {"normalize", o.data.normalize}};
  return p;
}

/// The options of a run from its recorded parameters (for a merge).
dissect_options options_of(const nlohmann::json& p) {
  dissect_options o;
  o.probe = p.at("probe").at("path");
  o.categories = p.at("probe").at("categories").get<std::vector<std::string>>();
  o.layers = p.at("layers").get<std::vector<std::string>>();
  o.names = p.at("names").get<std::vector<std::string>>();
  o.inputs = o.names;
  o.top = p.at("top");
  o.quantile = p.at("quantile").at("mode");
  if (o.quantile == "sketch") {
    o.resolution = p["quantile"].at("resolution");
    o.seed = p["quantile"].at("seed");
  }
  o.rule = p.at("union");
  o.iou_thresholds = p.at("iou_thresholds").get<std::vector<double>>();
  return o;
}

/// The partial key of a run: its parameters, the identity of each network's activations, the layer
/// shapes, the phase ("thresholds": pass 1 only; "tally": both) and, once tallied, a hash of the
/// thresholds every shard used.
nlohmann::json key_of(const nlohmann::json& settings, const std::vector<network>& nets, bool tallied) {
  nlohmann::json sources = nlohmann::json::array(), shapes = nlohmann::json::object();
  for (const auto& n : nets) sources.push_back(source_identity(n.provenance));
  for (const auto& l : nets.at(0).layers) shapes[l.name] = l.shape;
  std::string th;
  for (const auto& n : nets)
    for (const auto& l : n.layers) th.append(reinterpret_cast<const char*>(l.thresholds.data()), l.thresholds.size() * sizeof(float));
  return {{"params", settings}, {"sources", sources}, {"shapes", shapes}, {"phase", tallied ? "tally" : "thresholds"},
          {"thresholds_sha256", tallied ? nlohmann::json(sha256_text(th)) : nlohmann::json(nullptr)}};
}

nlohmann::json inputs_of(const std::vector<network>& nets) {
  nlohmann::json inputs = nlohmann::json::array();
  for (const auto& n : nets) inputs.push_back({{"network", n.name}, {"input", n.input}, {"provenance", n.provenance}});
  return inputs;
}

/// A threshold pass's output (a shard's, or the merge of every shard's): dissect.h5 with the
/// quantile accumulators and thresholds, and provenance.json. `dissect --thresholds` reads it.
void write_thresholds(const std::vector<network>& nets, const probe_set& ps, const partial_info& part, nlohmann::json rec,
                      const std::string& output, bool quiet) {
  output_folder out(output);
  rec["params"] = part.key.at("params");
  rec["params"]["phase"] = "thresholds";
  rec["params"]["images"] = nets[0].rows;
  rec["params"]["shard"] = part.shard_record();
  rec["finished"] = io::utc_now();
  const nlohmann::json prov{{"run", rec}, {"inputs", inputs_of(nets)}};
  const std::string h5name = out.path("dissect.h5");
  io::h5::handle h5(io::h5::check(H5Fcreate(h5name.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), output + "/dissect.h5",
                                  "cannot create"));
  save_networks(h5.get(), output + "/dissect.h5", nets, ps, false);
  write_partial(h5.get(), part, output + "/dissect.h5");
  io::h5::write_attribute(h5.get(), "provenance", prov.dump(), output + "/dissect.h5");
  h5.reset();
  out.write("provenance.json", prov.dump(2) + "\n");
  out.commit();
  if (!quiet)
    std::fprintf(stderr, "dissect: thresholds of %llu images%s; wrote %s\n", static_cast<unsigned long long>(nets[0].rows),
                 part.whole() ? " (every shard): give it to each shard's 'dissect --thresholds'"
                              : (" (shard " + std::to_string(part.shards[0]) + "/" + std::to_string(part.count) +
                                 "): merge every shard's with 'shapebias merge'").c_str(),
                 output.c_str());
}

/// The tables, dissect.h5 and provenance of tallied networks.
void write_dissection(std::vector<network>& nets, const probe_set& ps, const dissect_options& o, const partial_info& part,
                      nlohmann::json rec, const std::string& output) {
  for (std::size_t k = 1; k < nets.size(); ++k)
    if (nets[k].rows != nets[0].rows || nets[k].fingerprint != nets[0].fingerprint)
      throw std::runtime_error(quote_name(nets[k].input) + " holds other probe images than " + quote_name(nets[0].input) + " (" +
                               std::to_string(nets[k].rows) + " vs " + std::to_string(nets[0].rows) + ")");
  output_folder out(output);
  tables t;
  write_tables(nets, ps, o, t);
  rec["params"] = part.key.at("params");
  rec["params"]["images"] = nets[0].rows;
  rec["params"]["shard"] = part.shard_record();
  if (o.quantile == "sketch") {
    rec["seeds"] = {{"quantile_sketch", o.seed}};
    nlohmann::json err;
    for (const auto& n : nets)
      for (const auto& l : n.layers) err[n.name][l.name] = l.rank_error;
    rec["params"]["rank_error_bound"] = err;
  }
  rec["finished"] = io::utc_now();
  const nlohmann::json prov{{"run", rec}, {"inputs", inputs_of(nets)}};
  const std::string h5name = out.path("dissect.h5");
  io::h5::handle h5(io::h5::check(H5Fcreate(h5name.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), output + "/dissect.h5",
                                  "cannot create"));
  save_networks(h5.get(), output + "/dissect.h5", nets, ps, true);
  write_partial(h5.get(), part, output + "/dissect.h5");
  io::h5::write_attribute(h5.get(), "provenance", prov.dump(), output + "/dissect.h5");
  h5.reset();
  out.write("provenance.json", prov.dump(2) + "\n");
  out.write("units.csv", t.units.str());
  out.write("layers.csv", t.layers.str());
  out.write("concepts.csv", t.concepts.str());
  out.write("concept_units.csv", t.concept_units.str());
  if (nets.size() == 2) out.write("differences.csv", t.differences.str());
  out.commit();
  if (!o.common.quiet)
    std::fprintf(stderr, "dissect: %llu images, %zu layers, %zu networks%s; wrote %s\n", static_cast<unsigned long long>(nets[0].rows),
                 nets[0].layers.size(), nets.size(),
                 part.whole() ? "" : (", shard " + std::to_string(part.shards[0]) + "/" + std::to_string(part.count)).c_str(),
                 output.c_str());
}

/// The bytes of an HDF5 file in memory holding `nets` as a shard's partial result.
std::string image_of(const std::vector<network>& nets, const probe_set& ps, const partial_info& part, const nlohmann::json& rec,
                     bool tallied) {
  return partial_image("dissect.h5", part, rec, [&](hid_t h5) { save_networks(h5, "dissect.h5", nets, ps, tallied); });
}

/// The quantile accumulators of a threshold pass (or of any dissect output) in DIR, for the
/// settings `o`; sets o.layers to its layers.
std::vector<network> read_thresholds(const std::string& dir, dissect_options& o, nlohmann::json& key) {
  const std::string file = (std::filesystem::path(dir) / "dissect.h5").string();
  io::h5::quiet();
  io::h5::handle h(io::h5::check(H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), file, "cannot open (--thresholds)"));
  const auto part = read_partial(h.get(), file);
  if (part.verb != "dissect" || !part.whole())
    throw io_error(quote_name(file) + ": --thresholds needs the thresholds of every shard (merge the shards' threshold passes first)");
  key = part.key;
  if (o.layers.empty()) o.layers = key.at("params").at("layers").get<std::vector<std::string>>();
  return load_networks(h.get(), file, key, o, false);
}

void run(dissect_options o, nlohmann::json rec, mpi_session* mpi) {
  const bool live = is_model(o.inputs[0]);
  for (const auto& in : o.inputs) {
    if (in == "-") throw usage_error("dissect reads the activations twice (thresholds, then the tally): give a store or a model, not a stream");
    if (is_model(in) != live) throw usage_error("give either models or stores of activations, not both");
  }
  if (live && o.layers.empty()) throw usage_error("models as inputs need -l/--layers");
  if (!live && (o.data.resize || o.data.crop || o.data.channels || o.data.normalize != "netdissect"))
    throw usage_error("preprocessing options (--resize, --normalize, …) are for models run live; stores already hold activations");
  if (!(o.top > 0 && o.top < 1)) throw usage_error("--top must be in (0, 1)");
  for (double t : o.iou_thresholds)
    if (!(t >= 0 && t <= 1)) throw usage_error("--iou-thresholds must be in [0, 1]");
  const auto ps = probe_set::open(o.probe, o.categories);
  const auto sh = shard::parse(o.data.shard);
  std::string ids;
  std::size_t labelled = 0;  // in this shard
  for (std::size_t i = 0; i < ps.size(); ++i)
    if (ps.has_labels(i)) {
      ids += std::to_string(i) + "\n";
      labelled += sh.contains(static_cast<std::int64_t>(i));
    }
  if (ids.empty()) throw io_error(quote_name(o.probe) + ": no image has labels in the selected categories");
  std::optional<temp_file> ids_file;
  if (live) ids_file.emplace(ids);
  const std::string ids_path = ids_file ? ids_file->path : "";

  // Pass 1 over every input (the first input's layers are the default for the others).
  auto quantiles = [&] {
    std::vector<network> nets;
    for (std::size_t k = 0; k < o.inputs.size(); ++k) {
      nets.push_back(network{o.names[k], o.inputs[k], {}, 0, 0, nullptr});
      quantile_pass(nets.back(), o, ps, ids_path, labelled);
      if (o.layers.empty())
        for (const auto& l : nets[0].layers) o.layers.push_back(l.name);
    }
    return nets;
  };
  // Pass 2 over every input at the thresholds of `nets` (whose quantiles are of every shard when
  // they come from --thresholds or a merge; `own` then holds this shard's pass 1, to check).
  auto tally = [&](std::vector<network> nets, const std::vector<network>* own) {
    for (std::size_t k = 0; k < nets.size(); ++k) {
      auto& n = nets[k];
      n.input = o.inputs[k];
      n.rows = own ? (*own)[k].rows : 0;
      n.fingerprint = own ? (*own)[k].fingerprint : 0;
      if (n.layers.front().thresholds.empty()) set_thresholds(n, o);
      start_tallies(n, o, ps);
      tally_pass(n, o, ps, ids_path, labelled, own != nullptr);
      set_best(n);
    }
    return nets;
  };
  // With --thresholds: pass 2 only, at the thresholds of DIR, which must be of the same settings.
  auto tally_at_thresholds = [&] {
    nlohmann::json dir_key;
    auto nets = tally(read_thresholds(o.thresholds, o, dir_key), nullptr);
    if (nets.size() != o.inputs.size())
      throw io_error(quote_name(o.thresholds) + ": thresholds of " + std::to_string(nets.size()) + " networks for " +
                     std::to_string(o.inputs.size()) + " inputs");
    const auto mine = key_of(settings_of(o, ps, live), nets, false);
    for (const char* part : {"params", "sources", "shapes"})
      if (mine[part] != dir_key[part]) {
        const auto path = nlohmann::json::diff(dir_key[part], mine[part]).at(0).at("path").get<std::string>();
        throw io_error(quote_name(o.thresholds) + ": thresholds of another run (it differs in /" + std::string(part) + path + ")");
      }
    return nets;
  };
  auto finished = [&](const std::vector<network>& nets, bool tallied) {
    return partial_info::of("dissect", sh, key_of(settings_of(o, ps, live), nets, tallied));
  };

  if (!mpi) {
    if (!o.thresholds.empty()) {
      auto nets = tally_at_thresholds();
      write_dissection(nets, ps, o, finished(nets, true), rec, o.output);
    } else if (!sh.whole()) {
      const auto nets = quantiles();
      write_thresholds(nets, ps, finished(nets, false), rec, o.output, o.common.quiet);
    } else {
      const auto own = quantiles();
      auto nets = tally(own, &own);
      write_dissection(nets, ps, o, finished(nets, true), rec, o.output);
    }
    return;
  }
  // Rank 0's tallies carry the quantile accumulators of the whole run; the other ranks' need none.
  auto tallied_image = [&](std::vector<network> nets) {
    if (!mpi->root())
      for (auto& n : nets)
        for (auto& l : n.layers) l.exact.reset(), l.sketch.reset();
    return image_of(nets, ps, finished(nets, true), rec, true);
  };
  std::vector<std::string> images;
  if (!o.thresholds.empty()) {
    images = mpi->gather([&] { return tallied_image(tally_at_thresholds()); });
  } else {
    std::vector<network> own, all;  // this rank's threshold pass; on rank 0, every rank's merged
    const auto parts = mpi->gather([&] {
      own = quantiles();
      return image_of(own, ps, finished(own, false), rec, false);
    });
    // Rank 0 merges the ranks' quantile accumulators and sends every rank the thresholds alone.
    const auto thresholds = nlohmann::json::parse(mpi->broadcast([&] {
      std::vector<merge_part> opened;
      std::vector<partial_info> infos;
      std::vector<std::string> names;
      for (std::size_t r = 0; r < parts.size(); ++r) {
        opened.push_back(open_part(open_file_image(parts[r], "rank " + std::to_string(r)), "rank " + std::to_string(r)));
        infos.push_back(opened.back().info);
        names.push_back(opened.back().name);
      }
      const auto whole = check_parts(infos, names);
      all = load_networks(opened[0].file.get(), names[0], whole.key, o, false);
      for (std::size_t r = 1; r < opened.size(); ++r) merge_networks(all, load_networks(opened[r].file.get(), names[r], whole.key, o, false));
      nlohmann::json t = nlohmann::json::array();
      for (auto& n : all) {
        set_thresholds(n, o);
        auto& layers = t.emplace_back(nlohmann::json::array());
        for (const auto& l : n.layers) layers.push_back(l.thresholds);
      }
      return t.dump();
    }));
    for (auto& n : own)  // pass 1's accumulators were sent; its counts stay, for the check of pass 2
      for (auto& l : n.layers) l.exact.reset(), l.sketch.reset();
    images = mpi->gather([&] {
      auto nets = mpi->root() ? std::move(all) : own;
      for (std::size_t k = 0; k < nets.size(); ++k)
        for (std::size_t l = 0; l < nets[k].layers.size(); ++l)
          nets[k].layers[l].thresholds = thresholds.at(k).at(l).get<std::vector<float>>();
      return tallied_image(tally(std::move(nets), &own));
    });
  }
  if (mpi->root()) merge_images(images, mpi_step(*mpi), o.output, o.common.quiet);
}

}  // namespace

void merge_dissect(const std::vector<merge_part>& parts, const partial_info& whole, nlohmann::json rec, const std::string& output,
                   bool quiet) {
  const auto& params = whole.key.at("params");
  auto o = options_of(params);
  o.common.quiet = quiet;
  const auto ps = probe_set::open(o.probe, o.categories);
  if (ps.describe() != params.at("probe"))
    throw io_error(quote_name(o.probe) + ": the probe set has changed since the shards were dissected");
  const bool tallied = whole.key.at("phase") == "tally";
  auto nets = load_networks(parts[0].file.get(), parts[0].name, whole.key, o, tallied);
  for (const auto& n : nets)
    for (const auto& l : n.layers)
      if (!l.exact && !l.sketch)
        throw io_error(quote_name(parts[0].name) + ": holds no quantile accumulator of " + n.name + "/" + l.name);
  for (std::size_t i = 1; i < parts.size(); ++i)
    merge_networks(nets, load_networks(parts[i].file.get(), parts[i].name, whole.key, o, tallied));
  if (!tallied) {
    for (auto& n : nets) set_thresholds(n, o);
    write_thresholds(nets, ps, whole, rec, output, quiet);
    return;
  }
  for (auto& n : nets) {  // the thresholds every shard tallied at (equal: their hash is in the key)
    set_rank_errors(n);
    set_best(n);
  }
  write_dissection(nets, ps, o, whole, rec, output);
}

namespace {
}  // namespace

int run_dissect(std::span<char*> args) {
  dissect_options o;
  o.data.normalize = "netdissect";
  CLI::App app{
      "Network dissection (paper-spec §4; NetDissect-Lite's procedure, peers.md §5.2) on a Broden-format probe\n"
      "set: per-unit thresholds at the top 0.5%, IoU of each unit's masks with every concept, unit labels,\n"
      "units per category per layer, unique concepts per network, and S − R tables. The first input is S.\n\n"
      "Examples:\n"
      "  shapebias dissect S.pt R.pt --probe broden1_224 -l features.1,features.4 -o dissect/\n"
      "  shapebias dump S.pt broden1_224 --normalize netdissect -l layer4 -o S.h5\n"
      "  shapebias dissect S.h5 R.h5 --probe broden1_224 -o dissect/",
      "shapebias dissect"};
  app.add_option("inputs", o.inputs,
                 "TorchScript models (run live on the probe images), or stores of their activations on the probe "
                 "set (from 'shapebias dump MODEL PROBE'). First S, then R")
      ->required()->group("Input");
  app.add_option("--probe", o.probe, "The probe set: a folder in Broden's format (index.csv, label.csv, …)")
      ->required()->group("Input");
  app.add_option("--names", o.names, "Names of the networks, comma-separated")->delimiter(',')->group("Input")
      ->capture_default_str();
  app.add_option("-l,--layers", o.layers, "Layers, comma-separated (default for stores: every [C, H, W] layer)")
      ->delimiter(',')->group("Input");
  app.add_option("--categories", o.categories, "Concept categories to use, comma-separated (default: all of category.csv)")
      ->delimiter(',')->group("Input");
  app.add_option("--channels", o.data.channels, "Models: convert probe images to 1 or 3 channels; 0 keeps them")
      ->check(CLI::IsMember({0, 1, 3}))->group("Live")->capture_default_str();
  app.add_option("--resize", o.data.resize, "Models: resize the shorter side to N pixels")
      ->check(CLI::NonNegativeNumber)->group("Live")->capture_default_str();
  app.add_option("--crop", o.data.crop, "Models: centre crop N x N after resizing")
      ->check(CLI::NonNegativeNumber)->group("Live")->capture_default_str();
  app.add_option("--normalize", o.data.normalize,
                 "Models: netdissect (NetDissect-Lite's Caffe mean, / 0.224), imagenet, none, or MEAN/STD")
      ->group("Live")->capture_default_str();
  app.add_option("--top", o.top, "Threshold: the top fraction of each unit's values (NetDissect-Lite reads element "
                                 "int(1000(1 - top) - 1) of a 1000-point readout)")
      ->group("Dissection")->capture_default_str();
  app.add_option("--quantile", o.quantile, "Thresholds from a bounded-memory sketch, or exact (keeps every value: small probe sets)")
      ->check(CLI::IsMember({"sketch", "exact"}))->group("Dissection")->capture_default_str();
  app.add_option("--resolution", o.resolution, "Sketch: samples kept per unit")
      ->check(CLI::Range(std::size_t{64}, std::size_t{1} << 24))->group("Dissection")->capture_default_str();
  app.add_option("--seed", o.seed, "Sketch: seed of its compactions")->group("Dissection")->capture_default_str();
  app.add_option("--union", o.rule, "IoU union: lite (activation area counted in images where the concept's category falls "
                                    "inside the mask) or original (where it is annotated anywhere)")
      ->check(CLI::IsMember({"lite", "original"}))->group("Dissection")->capture_default_str();
  app.add_option("--iou-thresholds", o.iou_thresholds, "A unit is a detector when its best IoU is at least this; "
                                                       "tables are written for each")
      ->delimiter(',')->group("Dissection")->capture_default_str();
  app.add_option("--thresholds", o.thresholds, "Skip the threshold pass: tally at the thresholds in DIR, the merged "
                                               "threshold passes of every shard (see --shard) or a dissect output of the same "
                                               "settings")
      ->group("Dissection");
  app.add_option("-o,--output", o.output, "Output folder: dissect.h5 (IoU matrices, tallies, sketches), units.csv, "
                                          "layers.csv, concepts.csv, concept_units.csv, differences.csv, provenance.json")
      ->required()->group("Output");
  add_shard_options(app, o.data.shard, o.mpi);
  app.get_option("--shard")->description(
      "Process only shard K of N (0 <= K < N): the probe images whose id mod N is K. Without --thresholds a shard runs the "
      "threshold pass only; merge the N passes ('shapebias merge'), then tally each shard with --thresholds MERGED and "
      "merge the tallies");
  add_common_options(app, o.common);
  if (!parse(app, args)) return 0;
  check_names(o.names, o.inputs.size(), "inputs");
  const auto rec = start_record("dissect", args);
  with_mpi(o.mpi, o.data.shard, [&](mpi_session* mpi) { run(o, rec, mpi); });
  return 0;
}

}  // namespace shapebias::tools
