// SPDX-License-Identifier: MIT
// `shapebias tv`: the smoothness bias (paper-spec §3). Total variation and spectra of conv filters
// (--weights) or of activation maps, clean vs noisy, for one network or an S/R pair, from stores,
// streams, or models run live. The formulas live in include/shapebias/stats/{tv,spectrum}.hpp.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <limits>
#include <optional>
#include <sstream>
#include <unordered_set>

#include <xtensor/xadapt.hpp>
#include <xtensor/xview.hpp>

#include "common/child.hpp"
#include "common/data_cli.hpp"
#include "common/cli.hpp"
#include "common/dataset.hpp"
#include "common/endpoints.hpp"
#include "common/merge.hpp"
#include "common/mpi.hpp"
#include "common/output_folder.hpp"
#include "common/partial.hpp"
#include "common/plugin.hpp"
#include "common/provenance.hpp"
#include "common/rng.hpp"
#include "shapebias/io/provenance.hpp"
#include "shapebias/io/state.hpp"
#include "shapebias/stats/spectrum.hpp"
#include "shapebias/stats/tv.hpp"

namespace shapebias::tools {
namespace {

struct tv_options {
  common_options common;
  std::vector<std::string> inputs, noisy, names{"S", "R"}, layers;
  bool weights = false;
  data_options data;  // for models run live (--data)
  double beta = 1;
  std::string norm = "none";
  std::string reduce = "sum";
  bool include_1x1 = false;
  double cutoff = 0.25;
  std::size_t filter_fft = 32;  // filters are zero-padded to this size before their spectrum
  bool spectrum = true;
  double tau = 0.2;
  std::string nonfinite = "error";
  std::string output;
  bool mpi = false;
};


void write_provenance(const output_folder& out, const nlohmann::json& prov, hid_t h5, const std::string& h5name) {
  out.write("provenance.json", prov.dump(2) + "\n");
  io::h5::write_attribute(h5, "provenance", prov.dump(), h5name);
}

// ---------------------------------------------------------------------------------------------
// Filter TV (paper-spec §3.2)

struct filter_layer {
  std::string name;
  std::vector<std::size_t> shape;  // [O, I, kH, kW]
  std::vector<double> tv, hf;      // per filter
  double mean_tv = 0, sd_tv = 0, mean_hf = 0;
};

std::vector<filter_layer> filter_tv(const std::string& model, const tv_options& o, const stats::tv_params& p) {
  std::vector<conv_weights> ws;
  plugin().weights(model, ws);
  std::vector<filter_layer> out;
  for (auto& w : ws) {
    const std::size_t O = w.shape[0], I = w.shape[1], kh = w.shape[2], kw = w.shape[3];
    if (kh * kw == 1 && !o.include_1x1) continue;
    filter_layer l{w.name, w.shape, {}, {}};
    const auto x = xt::adapt(w.values, w.shape);
    const auto tv = stats::total_variation(x, p, static_cast<unsigned>(resolved_threads(o.common.threads)));  // [O, I]
    // A k x k kernel has only k frequencies per axis; zero-padded to N x N, its spectrum samples
    // the kernel's frequency response finely (the same energy, by Parseval).
    const std::size_t ph = std::max(kh, o.filter_fft), pw = std::max(kw, o.filter_fft);
    std::optional<stats::radial_spectrum> spec;
    if (o.spectrum) spec.emplace(ph, pw, o.cutoff);
    std::optional<stats::radial_spectrum::workspace> ws_;
    if (spec) ws_.emplace(*spec);
    std::vector<float> padded(ph * pw, 0.f);
    for (std::size_t f = 0; f < O; ++f) {
      double s = 0;
      for (std::size_t i = 0; i < I; ++i) s += tv(f, i);
      const double v = o.reduce == "mean" ? s / static_cast<double>(I) : s;
      if (!std::isfinite(v))
        throw std::runtime_error(quote_name(model) + ": layer '" + w.name + "' filter " + std::to_string(f) +
                                 " holds NaN or Inf weights");
      l.tv.push_back(v);
      if (spec) {
        stats::power_sums sums;
        for (std::size_t i = 0; i < I; ++i) {
          const float* k = w.values.data() + (f * I + i) * kh * kw;
          for (std::size_t r = 0; r < kh; ++r) std::copy(k + r * kw, k + (r + 1) * kw, padded.begin() + static_cast<long>(r * pw));
          spec->add_power(padded.data(), sums, *ws_);
        }
        l.hf.push_back(sums.high_fraction());
      }
    }
    stats::channel_moments m(1), h(1);
    for (auto v : l.tv) m.add(0, v);
    for (auto v : l.hf) h.add(0, v);
    l.mean_tv = m.mean(0);
    l.sd_tv = std::sqrt(m.variance(0));
    l.mean_hf = o.spectrum ? h.mean(0) : std::nan("");
    out.push_back(std::move(l));
  }
  if (out.empty())
    throw std::runtime_error(quote_name(model) + ": no convolution weights" +
                             (o.include_1x1 ? "" : " with kernels larger than 1x1 (see --include-1x1)"));
  return out;
}

void run_filters(const tv_options& o, nlohmann::json rec) {
  const stats::tv_params p{o.beta, stats::parse_tv_norm(o.norm)};
  std::vector<std::vector<filter_layer>> nets;
  for (const auto& m : o.inputs) nets.push_back(filter_tv(m, o, p));
  for (std::size_t k = 1; k < nets.size(); ++k) {
    if (nets[k].size() != nets[0].size())
      throw std::runtime_error("mismatched models: " + quote_name(o.inputs[0]) + " has " + std::to_string(nets[0].size()) +
                               " convolution layers, " + quote_name(o.inputs[k]) + " has " + std::to_string(nets[k].size()));
    for (std::size_t l = 0; l < nets[0].size(); ++l)
      if (nets[k][l].name != nets[0][l].name || nets[k][l].shape != nets[0][l].shape)
        throw std::runtime_error("mismatched S/R shapes: layer '" + nets[0][l].name + "' " + stats::detail::shape_string(nets[0][l].shape) +
                                 " in " + quote_name(o.inputs[0]) + ", '" + nets[k][l].name + "' " +
                                 stats::detail::shape_string(nets[k][l].shape) + " in " + quote_name(o.inputs[k]));
  }
  const auto& names = o.names;
  std::ostringstream t;
  t << "layer,kernel,in_channels,channels";
  for (std::size_t k = 0; k < nets.size(); ++k) t << ",mean_tv_" << names[k] << ",sd_tv_" << names[k];
  if (o.spectrum)
    for (std::size_t k = 0; k < nets.size(); ++k) t << ",hf_fraction_" << names[k];
  t << "\n";
  std::vector<double> wsum(nets.size(), 0), whf(nets.size(), 0);
  double channels = 0;
  for (std::size_t l = 0; l < nets[0].size(); ++l) {
    const auto& s = nets[0][l].shape;
    t << nets[0][l].name << "," << s[2] << "x" << s[3] << "," << s[1] << "," << s[0];
    for (std::size_t k = 0; k < nets.size(); ++k) t << "," << csv_number(nets[k][l].mean_tv) << "," << csv_number(nets[k][l].sd_tv);
    if (o.spectrum)
      for (std::size_t k = 0; k < nets.size(); ++k) t << "," << csv_number(nets[k][l].mean_hf);
    t << "\n";
    channels += static_cast<double>(s[0]);
    for (std::size_t k = 0; k < nets.size(); ++k) {
      wsum[k] += nets[k][l].mean_tv * static_cast<double>(s[0]);
      whf[k] += nets[k][l].mean_hf * static_cast<double>(s[0]);
    }
  }
  // The network-level number of §3.2: Σ Mean_TV_l · Channels_l / Σ Channels_l.
  t << "network,,," << channels;
  for (std::size_t k = 0; k < nets.size(); ++k) t << "," << csv_number(wsum[k] / channels) << ",";
  if (o.spectrum)
    for (std::size_t k = 0; k < nets.size(); ++k) t << "," << csv_number(whf[k] / channels);
  t << "\n";

  rec["params"] = {{"mode", "weights"},          {"beta", o.beta},          {"norm", o.norm},
                   {"input_channels", o.reduce}, {"include_1x1", o.include_1x1}, {"spectrum", o.spectrum},
                   {"cutoff", o.cutoff},         {"filter_fft", o.filter_fft}, {"names", std::vector<std::string>(names.begin(), names.begin() + nets.size())}};
  rec["models"] = nlohmann::json::array();
  for (const auto& m : o.inputs) rec["models"].push_back({{"path", m}, {"sha256", sha256_file(m)}});
  if (o.output.empty()) {
    std::cout << "# " << rec.dump() << "\n" << t.str();
    return;
  }
  output_folder out(o.output);
  out.write("filters.csv", t.str());
  std::ostringstream units;
  units << "network,layer,filter,tv" << (o.spectrum ? ",hf_fraction" : "") << "\n";
  for (std::size_t k = 0; k < nets.size(); ++k)
    for (const auto& l : nets[k])
      for (std::size_t f = 0; f < l.tv.size(); ++f)
        units << names[k] << "," << l.name << "," << f << "," << csv_number(l.tv[f]) << (o.spectrum ? "," + csv_number(l.hf[f]) : "") << "\n";
  out.write("filter_units.csv", units.str());
  rec["finished"] = io::utc_now();
  out.write("provenance.json", nlohmann::json{{"run", rec}}.dump(2) + "\n");
  out.commit();
}

// ---------------------------------------------------------------------------------------------
// Activation TV, clean vs noisy (paper-spec §3.3)

struct layer_stats {
  std::string name;
  std::vector<std::size_t> shape;  // [C, H, W]
  std::optional<stats::tv_accumulator> tv;
  std::optional<stats::spectrum_accumulator> spec;
};

/// One pass over one source (a network's clean or noisy activations).
struct pass {
  std::string network, input;
  std::vector<layer_stats> layers;
  std::uint64_t rows = 0, fingerprint = 0;  // fingerprint: Σ splitmix64(id) mod 2^64, order-free; shards' add up
  nlohmann::json provenance;
};

/// What the tables are made of: the key (settings and sources, equal in every shard of a run) and
/// per network its clean pass, and its noisy one when there is one. A run, `shapebias merge` of its
/// shards and rank 0 of an MPI run all write their tables from this alone.
struct activation_result {
  nlohmann::json key;
  std::vector<pass> clean, noisy;
};

std::vector<std::string> default_layers(const io::header& h) {
  std::vector<std::string> out;
  for (const auto& l : h.layers)
    if (l.shape.size() == 3) out.push_back(l.name);
  return out;
}

void accumulate(io::batch_source& src, pass& ps, const std::vector<std::string>& names, const tv_options& o,
                const std::unordered_set<std::int64_t>* ids, const shard& sh) {
  const auto& h = src.header();
  std::vector<std::size_t> idx;
  const stats::tv_params p{o.beta, stats::parse_tv_norm(o.norm)};
  const auto policy = o.nonfinite == "skip" ? stats::nonfinite_policy::skip : stats::nonfinite_policy::error;
  for (const auto& n : names) {
    const auto i = h.find(n);
    if (!i) throw io_error(quote_name(ps.input) + ": no layer '" + n + "'");
    const auto& s = h.layers[*i].shape;
    if (s.size() != 3)
      throw io_error(quote_name(ps.input) + ": layer '" + n + "' has rows of shape " + stats::detail::shape_string(s) +
                     "; TV needs [C, H, W] maps");
    idx.push_back(*i);
    layer_stats l{n, s, stats::tv_accumulator(s[0], p, policy), std::nullopt};
    if (o.spectrum) l.spec.emplace(s[0], s[1], s[2], o.cutoff);
    ps.layers.push_back(std::move(l));
  }
  const auto threads = static_cast<unsigned>(resolved_threads(o.common.threads));
  while (auto b = src.next()) {
    std::vector<std::size_t> keep;
    for (std::size_t r = 0; r < b->rows(); ++r)
      if ((!ids || ids->count(b->ids[r])) && sh.contains(b->ids[r])) keep.push_back(r);
    if (keep.empty()) continue;
    std::vector<std::int64_t> kept_ids;
    for (auto r : keep) {
      kept_ids.push_back(b->ids[r]);
      ps.fingerprint += splitmix64(static_cast<std::uint64_t>(b->ids[r]));
    }
    for (std::size_t k = 0; k < idx.size(); ++k) {
      auto& l = ps.layers[k];
      const auto& all = b->data[idx[k]];
      xt::xarray<float> sel;
      const xt::xarray<float>* x = &all;
      if (keep.size() != b->rows()) {
        sel = xt::view(all, xt::keep(keep), xt::all(), xt::all(), xt::all());
        x = &sel;
      }
      try {
        l.tv->update(*x, kept_ids.data(), threads);
      } catch (const stats::nonfinite_error& e) {
        throw std::runtime_error(quote_name(ps.input) + " layer '" + l.name + "', row " + std::to_string(ps.rows + e.row) +
                                 " (input id " + std::to_string(e.id) + "), channel " + std::to_string(e.channel) +
                                 ": the map holds NaN or Inf (--nonfinite skip skips and counts such maps)");
      }
      if (l.spec) l.spec->update(*x, threads);
    }
    ps.rows += keep.size();
  }
  ps.provenance = parse_log(src.header().provenance);
  if (ps.rows == 0)
    throw io_error(quote_name(ps.input) + ": no inputs" + (ids ? " with the ids of --ids" : "") +
                   (sh.whole() ? "" : " in shard " + sh.to_string()));
}

pass run_pass(const std::string& network, const std::string& input, bool noisy_copy, const tv_options& o,
              const std::unordered_set<std::int64_t>* ids, const shard& sh) {
  pass ps;
  ps.network = network;
  if (is_model(input)) {
    ps.input = input + (noisy_copy ? " (noisy)" : "");
    auto d = o.data;
    if (!noisy_copy) d.noise = 0;
    child_stream child(dump_args(input, d, o.common, o.layers));
    child.consume([&](io::batch_source& src) { accumulate(src, ps, o.layers, o, nullptr, sh); });
    return ps;
  }
  ps.input = input;
  auto src = open_source(input, static_cast<std::size_t>(o.common.batch_size), false, o.layers, sh);
  accumulate(*src, ps, o.layers.empty() ? default_layers(src->header()) : o.layers, o, ids, sh);
  return ps;
}

/// The accumulator states (NETWORK/LAYER/{tv,spectrum}_{clean,noisy}) and, as the attribute
/// "passes", each pass's network, condition, input, rows, id fingerprint and input provenance.
void save_result(hid_t h5, const activation_result& r, const std::string& file) {
  nlohmann::json meta = nlohmann::json::array();
  auto save = [&](const pass& p, const std::string& condition) {
    meta.push_back({{"network", p.network}, {"condition", condition}, {"input", p.input}, {"rows", p.rows},
                    {"fingerprint", p.fingerprint}, {"provenance", p.provenance}});
    for (const auto& l : p.layers) {
      const std::string g = p.network + "/" + l.name;
      io::write_state(h5, g + "/tv_" + condition, l.tv->save(), file);
      if (l.spec) io::write_state(h5, g + "/spectrum_" + condition, l.spec->save(), file);
    }
  };
  for (std::size_t k = 0; k < r.clean.size(); ++k) {
    save(r.clean[k], "clean");
    if (!r.noisy.empty()) save(r.noisy[k], "noisy");
  }
  io::h5::write_attribute(h5, "passes", meta.dump(), file);
}

activation_result load_result(hid_t h5, const nlohmann::json& key, const std::string& file) {
  activation_result r{key, {}, {}};
  const auto meta = nlohmann::json::parse(io::h5::read_string_attribute(h5, "passes", file));
  const auto& params = key.at("params");
  for (const auto& m : meta) {
    pass p{m.at("network"), m.at("input"), {}, m.at("rows"), m.at("fingerprint"), m.at("provenance")};
    const std::string cond = m.at("condition");
    for (const auto& name : params.at("layers")) {
      const std::string g = p.network + "/" + name.get<std::string>();
      layer_stats l{name, key.at("shapes").at(name.get<std::string>()), stats::tv_accumulator::load(io::read_state(h5, g + "/tv_" + cond, file)),
                    std::nullopt};
      if (params.at("spectrum")) l.spec = stats::spectrum_accumulator::load(io::read_state(h5, g + "/spectrum_" + cond, file));
      p.layers.push_back(std::move(l));
    }
    (cond == "clean" ? r.clean : r.noisy).push_back(std::move(p));
  }
  return r;
}

/// Adds shard `b` to `a` (the keys are equal: checked by check_parts).
void merge_result(activation_result& a, const activation_result& b) {
  auto merge = [](std::vector<pass>& x, const std::vector<pass>& y) {
    for (std::size_t k = 0; k < x.size(); ++k) {
      x[k].rows += y[k].rows;
      x[k].fingerprint += y[k].fingerprint;
      for (std::size_t l = 0; l < x[k].layers.size(); ++l) {
        x[k].layers[l].tv->merge(*y[k].layers[l].tv);
        if (x[k].layers[l].spec) x[k].layers[l].spec->merge(*y[k].layers[l].spec);
      }
    }
  };
  merge(a.clean, b.clean);
  merge(a.noisy, b.noisy);
}

/// The tables, tv.h5 (states, partial record) and provenance of `r`: to the folder `output`, or
/// the per-layer table to stdout when `output` is empty.
void write_activations(activation_result& r, nlohmann::json rec, const partial_info& part, const std::string& output,
                       bool quiet) {
  const auto& params = r.key.at("params");
  const auto names = params.at("names").get<std::vector<std::string>>();
  const double tau_factor = params.at("tau");
  const bool noisy = params.at("noisy"), spectrum = params.at("spectrum");
  auto& clean = r.clean;
  auto& noisy_passes = r.noisy;
  // The same images everywhere, and the same map shapes per layer.
  auto same = [&](const pass& a, const pass& b) {
    if (a.rows != b.rows || a.fingerprint != b.fingerprint)
      throw std::runtime_error(quote_name(b.input) + " holds other inputs than " + quote_name(a.input) + " (" +
                               std::to_string(b.rows) + " vs " + std::to_string(a.rows) + " rows, or other ids)");
    for (std::size_t l = 0; l < a.layers.size(); ++l)
      if (a.layers[l].shape != b.layers[l].shape)
        throw std::runtime_error("mismatched shapes: layer '" + a.layers[l].name + "' is " + stats::detail::shape_string(a.layers[l].shape) +
                                 " in " + quote_name(a.input) + " but " + stats::detail::shape_string(b.layers[l].shape) + " in " +
                                 quote_name(b.input));
  };
  for (std::size_t k = 0; k < clean.size(); ++k) {
    same(clean[0], clean[k]);
    if (noisy) same(clean[0], noisy_passes[k]);
  }

  std::optional<output_folder> out;  // without -o, the per-layer table goes to stdout
  if (!output.empty()) out.emplace(output);
  std::ostringstream layers_csv;
  layers_csv << "network,layer,channels,height,width,images,tv_clean,tv_noisy,tau,flagged,hf_clean,hf_noisy,"
                "skipped_clean,skipped_noisy\n";
  std::ostringstream channels_csv, flagged_csv, spectra_csv;
  channels_csv << "network,layer,channel,tv_clean,tv_clean_sd,tv_noisy,tv_noisy_sd,difference,flagged,hf_clean,hf_noisy\n";
  flagged_csv << "layer,network,channel,tv_clean,tv_noisy,abs_difference\n";
  spectra_csv << "network,layer,channel,condition,ring,frequency,power\n";
  const std::string h5name = out ? out->path("tv.h5") : "";
  io::h5::handle h5;
  if (out)
    h5 = io::h5::handle(io::h5::check(H5Fcreate(h5name.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT),
                                      output + "/tv.h5", "cannot create"));
  std::size_t total_flagged = 0;
  for (std::size_t l = 0; l < clean[0].layers.size(); ++l) {
    const auto& name = clean[0].layers[l].name;
    const auto& s0 = *clean[0].layers[l].tv;
    const std::size_t C = s0.channels();
    // τ_l = tau × the mean over channels of S's TV_clean (S: the first network).
    // Channels whose every map was skipped (--nonfinite skip) have no mean and are left out.
    double mean_s = 0, finite = 0;
    for (std::size_t c = 0; c < C; ++c)
      if (std::isfinite(s0.moments().mean(c))) mean_s += s0.moments().mean(c), finite += 1;
    const double tau = tau_factor * mean_s / finite;
    struct flag { std::string net; std::size_t c; double clean, noisy; };
    std::vector<flag> flags;
    for (std::size_t k = 0; k < clean.size(); ++k) {
      const auto& ls = clean[k].layers[l];
      const auto& tc = *ls.tv;
      const stats::tv_accumulator* tn = noisy ? &*noisy_passes[k].layers[l].tv : nullptr;
      const stats::spectrum_accumulator* sc = ls.spec ? &*ls.spec : nullptr;
      const stats::spectrum_accumulator* sn = noisy && sc ? &*noisy_passes[k].layers[l].spec : nullptr;
      double sum_c = 0, sum_n = 0, hf_c = 0, hf_n = 0;
      std::size_t nflag = 0;
      std::uint64_t skip_c = 0, skip_n = 0;
      for (std::size_t c = 0; c < C; ++c) {
        const double vc = tc.moments().mean(c), vn = tn ? tn->moments().mean(c) : std::nan("");
        const bool flagged = tn && std::abs(vc - vn) >= tau;
        sum_c += vc;
        sum_n += vn;
        skip_c += tc.skipped(c);
        if (tn) skip_n += tn->skipped(c);
        const double hc = sc ? sc->high_fraction().mean(c) : std::nan(""), hn = sn ? sn->high_fraction().mean(c) : std::nan("");
        hf_c += hc;
        hf_n += hn;
        if (flagged) {
          ++nflag;
          flags.push_back({names[k], c, vc, vn});
        }
        channels_csv << names[k] << "," << name << "," << c << "," << csv_number(vc) << "," << csv_number(std::sqrt(tc.moments().variance(c)))
                     << "," << csv_number(vn) << "," << csv_number(tn ? std::sqrt(tn->moments().variance(c)) : std::nan("")) << ","
                     << csv_number(vn - vc) << "," << (tn ? (flagged ? "1" : "0") : "") << "," << csv_number(hc) << "," << csv_number(hn) << "\n";
        auto profile = [&](const stats::spectrum_accumulator* a, const char* cond) {
          if (!a) return;
          const auto p = a->profile(c);
          for (std::size_t i = 0; i < p.size(); ++i)
            spectra_csv << names[k] << "," << name << "," << c << "," << cond << "," << i << ","
                        << csv_number(a->spectrum().ring_frequency(i)) << "," << csv_number(p[i]) << "\n";
        };
        profile(sc, "clean");
        profile(sn, "noisy");
      }
      const double Cd = static_cast<double>(C);
      const auto& shp = ls.shape;
      layers_csv << names[k] << "," << name << "," << shp[0] << "," << shp[1] << "," << shp[2] << "," << clean[k].rows << ","
                 << csv_number(sum_c / Cd) << "," << csv_number(sum_n / Cd) << "," << csv_number(tau) << "," << (tn ? std::to_string(nflag) : "")
                 << "," << csv_number(hf_c / Cd) << "," << csv_number(hf_n / Cd) << "," << skip_c << "," << (tn ? std::to_string(skip_n) : "")
                 << "\n";
      total_flagged += nflag;
    }
    std::stable_sort(flags.begin(), flags.end(),
                     [](const flag& a, const flag& b) { return std::abs(a.clean - a.noisy) > std::abs(b.clean - b.noisy); });
    for (const auto& f : flags)
      flagged_csv << name << "," << f.net << "," << f.c << "," << csv_number(f.clean) << "," << csv_number(f.noisy) << ","
                  << csv_number(std::abs(f.clean - f.noisy)) << "\n";
  }

  rec["params"] = params;
  rec["params"]["mode"] = "activations";
  rec["params"]["images"] = clean[0].rows;
  rec["params"]["shard"] = part.shard_record();
  nlohmann::json inputs = nlohmann::json::array();
  for (std::size_t k = 0; k < clean.size(); ++k) {
    inputs.push_back({{"network", names[k]}, {"condition", "clean"}, {"input", clean[k].input}, {"provenance", clean[k].provenance}});
    if (noisy)
      inputs.push_back({{"network", names[k]}, {"condition", "noisy"}, {"input", noisy_passes[k].input},
                        {"provenance", noisy_passes[k].provenance}});
  }
  if (!out) {
    std::cout << "# " << rec.dump() << "\n" << layers_csv.str();
    return;
  }
  save_result(h5.get(), r, h5name);
  write_partial(h5.get(), part, h5name);
  rec["finished"] = io::utc_now();
  write_provenance(*out, {{"run", rec}, {"inputs", inputs}}, h5.get(), output + "/tv.h5");
  h5.reset();
  out->write("layers.csv", layers_csv.str());
  out->write("channels.csv", channels_csv.str());
  if (noisy) out->write("flagged.csv", flagged_csv.str());
  if (spectrum) out->write("spectra.csv", spectra_csv.str());
  out->commit();
  if (!quiet)
    std::fprintf(stderr, "tv: %llu images, %zu layers, %zu networks%s%s; wrote %s\n",
                 static_cast<unsigned long long>(clean[0].rows), clean[0].layers.size(), clean.size(),
                 noisy ? (", " + std::to_string(total_flagged) + " flagged channels").c_str() : "",
                 part.whole() ? "" : (", shard " + std::to_string(part.shards[0]) + "/" + std::to_string(part.count)).c_str(),
                 output.c_str());
}

/// Runs the passes of this process's shard: every input's clean pass, then its noisy one.
activation_result compute_activations(tv_options o) {
  const bool live = is_model(o.inputs[0]);
  for (const auto& in : o.inputs)
    if (is_model(in) != live) throw usage_error("give either models (with --data) or activations (stores, streams), not both");
  if (live && o.data.path.empty()) throw usage_error("models as inputs need --data (the data set to run them on)");
  if (live && o.layers.empty()) throw usage_error("models as inputs need -l/--layers");
  if (!live && !o.data.path.empty()) throw usage_error("--data is for models; stores and streams already hold activations");
  if (!live && (o.data.noise > 0 || o.data.transform != "none" || o.data.resize || o.data.crop || o.data.channels ||
                o.data.normalize != "none"))
    throw usage_error("preprocessing options (--noise, --transform, --resize, …) are for models run live on --data");
  if (!o.noisy.empty() && o.noisy.size() != o.inputs.size())
    throw usage_error("--noisy needs one input per clean input (" + std::to_string(o.inputs.size()) + "), got " +
                      std::to_string(o.noisy.size()));
  if (live && !o.noisy.empty()) throw usage_error("--noisy is for stored activations; with models, --noise SIGMA makes the noisy copies");
  const bool noisy = live ? o.data.noise > 0 : !o.noisy.empty();
  const auto sh = shard::parse(o.data.shard);
  // The id list is read once here (it may be a pipe); models run live get a copy in a file.
  std::optional<std::unordered_set<std::int64_t>> ids;
  nlohmann::json ids_record = nullptr;
  std::optional<temp_file> ids_copy;
  if (!o.data.ids.empty()) {
    const auto list = read_id_list(o.data.ids, live ? dataset::open(o.data)->size() : std::numeric_limits<std::size_t>::max());
    ids_record = describe_id_list(o.data.ids, list);
    std::string text;
    for (auto v : list) text += std::to_string(v) + "\n";
    if (live) {
      ids_copy.emplace(text);
      o.data.ids = ids_copy->path;
    } else {
      ids.emplace(list.begin(), list.end());
    }
  }
  // Each network's clean pass, then its noisy one: memory holds one batch and the accumulators.
  activation_result r;
  for (std::size_t k = 0; k < o.inputs.size(); ++k) {
    r.clean.push_back(run_pass(o.names[k], o.inputs[k], false, o, ids ? &*ids : nullptr, sh));
    if (o.layers.empty()) for (const auto& l : r.clean[0].layers) o.layers.push_back(l.name);
    if (noisy) r.noisy.push_back(run_pass(o.names[k], live ? o.inputs[k] : o.noisy[k], live, o, ids ? &*ids : nullptr, sh));
  }
  if (r.clean[0].layers.empty()) throw io_error(quote_name(o.inputs[0]) + ": no layer with [C, H, W] maps");

  nlohmann::json params = {{"beta", o.beta},       {"norm", o.norm},           {"tau", o.tau},
                           {"spectrum", o.spectrum}, {"cutoff", o.cutoff},       {"nonfinite", o.nonfinite},
                           {"layers", o.layers},   {"noisy", noisy},           {"ids", ids_record},
                           {"names", std::vector<std::string>(o.names.begin(), o.names.begin() + static_cast<long>(o.inputs.size()))}};
  if (live)
    params["data"] = {{"path", o.data.path},         {"format", o.data.format},     {"split", o.data.split},
                      {"channels", o.data.channels}, {"resize", o.data.resize},     {"crop", o.data.crop},
                      {"normalize", o.data.normalize}, {"noise", o.data.noise},     {"noise_seed", o.data.noise_seed},
                      {"noise_clip", o.data.noise_clip}};
  nlohmann::json sources = nlohmann::json::array(), shapes = nlohmann::json::object();
  for (std::size_t k = 0; k < r.clean.size(); ++k) {
    sources.push_back(source_identity(r.clean[k].provenance));
    if (noisy) sources.push_back(source_identity(r.noisy[k].provenance));
  }
  for (const auto& l : r.clean[0].layers) shapes[l.name] = l.shape;
  r.key = {{"params", params}, {"sources", sources}, {"shapes", shapes}};
  return r;
}

void run_activations(const tv_options& o, nlohmann::json rec, mpi_session* mpi) {
  if (!mpi) {
    auto r = compute_activations(o);
    write_activations(r, rec, partial_info::of("tv", shard::parse(o.data.shard), r.key), o.output, o.common.quiet);
    return;
  }
  const auto images = mpi->gather([&] {
    const auto r = compute_activations(o);
    return partial_image("tv.h5", partial_info::of("tv", shard::parse(o.data.shard), r.key), rec,
                         [&](hid_t h5) { save_result(h5, r, "tv.h5"); });
  });
  if (mpi->root()) merge_images(images, mpi_step(*mpi), o.output, o.common.quiet);
}

}  // namespace

void merge_tv(const std::vector<merge_part>& parts, const partial_info& whole, nlohmann::json rec, const std::string& output,
              bool quiet) {
  auto r = load_result(parts[0].file.get(), whole.key, parts[0].name);
  for (std::size_t i = 1; i < parts.size(); ++i) merge_result(r, load_result(parts[i].file.get(), whole.key, parts[i].name));
  write_activations(r, std::move(rec), whole, output, quiet);
}

namespace {
}  // namespace

int run_tv(std::span<char*> args) {
  tv_options o;
  CLI::App app{
      "Total variation and spectra (paper-spec §3): of convolution filters (--weights), or of activation maps\n"
      "clean vs noisy, per channel, for one network or an S/R pair. The first input is S: its mean clean TV\n"
      "sets the outlier threshold tau x mean.\n\n"
      "Examples:\n"
      "  shapebias tv --weights S.pt R.pt\n"
      "  shapebias tv S.h5 R.h5 --noisy S-noisy.h5 R-noisy.h5 -o tv/\n"
      "  shapebias tv S.pt R.pt --data /usr/share/datasets/fashion-mnist --noise 0.1 -l relu1,relu2 -o tv/\n"
      "  shapebias dump S.pt data -l relu1 -o - | shapebias tv -",
      "shapebias tv"};
  app.add_option("inputs", o.inputs,
                 "With --weights: TorchScript models. Otherwise: stores (.h5) or streams ('-'), or TorchScript models "
                 "run live on --data. First S, then R")
      ->required()->group("Input");
  app.add_flag("--weights", o.weights, "Filter TV of the models' convolution weights (§3.2) instead of activations")
      ->group("Input");
  app.add_option("--noisy", o.noisy, "The noisy counterpart of each stored input, in the same order")->group("Input");
  app.add_option("--names", o.names, "Names of the networks, comma-separated")->delimiter(',')->group("Input")
      ->capture_default_str();
  app.add_option("-l,--layers", o.layers, "Layers, comma-separated (default for stores: every [C, H, W] layer)")
      ->delimiter(',')->group("Input");
  add_data_options(app, o.data, true, "--data");
  app.get_option("--data")->group("Live");
  app.add_option("--beta", o.beta, "Exponent of each absolute difference")->check(CLI::PositiveNumber)->group("TV")
      ->capture_default_str();
  app.add_option("--norm", o.norm, "Normalisation of each map's TV: none, pixel (/ H·W) or l1 (/ Σ|x|)")
      ->check(CLI::IsMember({"none", "pixel", "l1"}))->group("TV")->capture_default_str();
  app.add_option("--input-channels", o.reduce, "Filters: sum or mean the TV over input channels")
      ->check(CLI::IsMember({"sum", "mean"}))->group("TV")->capture_default_str();
  app.add_flag("--include-1x1", o.include_1x1, "Filters: include 1x1 kernels (their TV is 0)")->group("TV");
  app.add_option("--tau", o.tau, "Outlier rule: flag |TV_clean − TV_noisy| ≥ tau × mean over channels of S's TV_clean")
      ->check(CLI::NonNegativeNumber)->group("TV")->capture_default_str();
  app.add_option("--nonfinite", o.nonfinite, "Maps with NaN or Inf: error (stop, naming layer, row and channel) or skip "
                                             "(leave them out and count them)")
      ->check(CLI::IsMember({"error", "skip"}))->group("TV")->capture_default_str();
  app.add_option("--cutoff", o.cutoff, "Spectra: the high-frequency cutoff in cycles per pixel, in (0, √2/2]")
      ->check(CLI::Range(1e-9, 0.7071))->group("Spectrum")->capture_default_str();
  app.add_option("--filter-fft", o.filter_fft, "Filters: zero-pad each kernel to N x N before its spectrum")
      ->check(CLI::Range(std::size_t{1}, std::size_t{4096}))->group("Spectrum")->capture_default_str();
  app.add_flag("!--no-spectrum", o.spectrum, "Skip the spectra")->group("Spectrum");
  app.add_option("-o,--output", o.output,
                 "Output folder (CSV tables, tv.h5 with the accumulator states, provenance.json); "
                 "without it the per-layer table goes to stdout")
      ->group("Output");
  add_shard_options(app, o.data.shard, o.mpi);
  add_common_options(app, o.common);
  if (!parse(app, args)) return 0;
  check_names(o.names, o.inputs.size(), "inputs");
  auto rec = start_record("tv", args);
  if (o.weights) {
    if (!o.noisy.empty() || !o.data.path.empty() || !o.data.shard.empty() || o.mpi)
      throw usage_error("--weights takes models only (no --noisy, --data, --shard or --mpi)");
    run_filters(o, rec);
    return 0;
  }
  with_mpi(o.mpi, o.data.shard, [&](mpi_session* mpi) { run_activations(o, rec, mpi); });
  return 0;
}

}  // namespace shapebias::tools
