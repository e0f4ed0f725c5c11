// SPDX-License-Identifier: MIT
// FGSM and PGD with torchattacks 3.5.1's op order (peers.md §5.1), and the `attack` verb.
#include "torch/attack.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/script.h>

#include <cmath>
#include <cstdio>

#include "common/endpoints.hpp"
#include "common/plugin.hpp"
#include "common/provenance.hpp"
#include "common/rng.hpp"
#include "torch/model.hpp"
#include "torch/pipeline.hpp"
#include "torch/runtime.hpp"

namespace shapebias::tools {
namespace {

namespace F = torch::nn::functional;

/// A generator for one input: the seed, the input id and a stream number (start, restart, target)
/// mixed by splitmix64, so no two inputs or uses share a stream.
at::Generator input_generator(std::uint64_t seed, std::int64_t id, std::uint64_t stream) {
  return at::make_generator<at::CPUGeneratorImpl>(stream_seed(seed, id, stream));
}

/// The per-input loss the attack increases: cross-entropy (or the logit margin) of the true class,
/// or minus that of the target class.
torch::Tensor per_input_loss(const torch::Tensor& logits, const torch::Tensor& cls, const attack_params& p) {
  torch::Tensor l;
  if (p.loss == "ce") {
    l = F::cross_entropy(logits, cls, F::CrossEntropyFuncOptions().reduction(torch::kNone));
  } else {
    const auto own = logits.gather(1, cls.unsqueeze(1)).squeeze(1);
    const auto others = logits.scatter(1, cls.unsqueeze(1), -std::numeric_limits<float>::infinity());
    l = std::get<0>(others.max(1)) - own;
  }
  return p.targeted() ? -l : l;
}

torch::Tensor successful(const torch::Tensor& pred, const torch::Tensor& cls, const attack_params& p) {
  return p.targeted() ? pred.eq(cls) : pred.ne(cls);
}

/// Per-input losses, their mean's gradient with respect to x (as torchattacks), and the logits.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> loss_and_grad(const logits_fn& f, const torch::Tensor& x,
                                                                      const torch::Tensor& cls, const attack_params& p) {
  auto xg = x.detach().requires_grad_(true);
  const auto logits = f(xg);
  const auto losses = per_input_loss(logits, cls, p);
  const auto mean = losses.mean();
  if (!mean.requires_grad())
    throw std::runtime_error("the model's output does not depend differentiably on its input (no gradient)");
  auto g = torch::autograd::grad({mean}, {xg}, {}, false, false, /*allow_unused=*/true)[0];
  if (!g.defined()) throw std::runtime_error("the model's output does not depend differentiably on its input (no gradient)");
  return {losses.detach(), g, logits.detach()};
}

torch::Tensor per_input(const torch::Tensor& v) { return v.view({v.size(0), -1}); }
torch::Tensor as_images(const torch::Tensor& v, const torch::Tensor& like) {
  std::vector<int64_t> s(static_cast<std::size_t>(like.dim()), 1);
  s[0] = like.size(0);
  return v.view(s);
}

/// The random start of one attempt: x0 plus per-input noise, clamped to [0,1].
torch::Tensor random_start(const torch::Tensor& x0, const std::vector<std::int64_t>& ids, const attack_params& p,
                           std::uint64_t attempt) {
  auto noise = torch::empty_like(x0);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    auto gen = input_generator(p.seed, ids[i], 1 + attempt);
    auto d = noise[static_cast<int64_t>(i)];
    if (p.norm == "linf") {
      d.uniform_(-p.eps, p.eps, gen);
    } else {
      // torchattacks' L2 start: a Gaussian direction scaled to eps·r, r uniform in [0,1].
      d.normal_(0, 1, gen);
      const auto r = torch::empty({1}).uniform_(0, 1, gen);
      d.mul_(r / d.norm() * p.eps);
    }
  }
  return torch::clamp(x0 + noise, 0, 1);
}

/// One PGD attempt from `start`. When `first_logits` is given, it receives the logits at `start`.
torch::Tensor pgd(const logits_fn& f, const torch::Tensor& x0, torch::Tensor xa, const torch::Tensor& cls,
                  const attack_params& p, torch::Tensor* first_logits = nullptr) {
  torch::Tensor best_loss, best_x;
  auto keep_best = [&](const torch::Tensor& losses, const torch::Tensor& x) {
    if (!best_loss.defined()) {
      best_loss = losses.clone();
      best_x = x.clone();
      return;
    }
    const auto better = best_loss.lt(losses);  // Madry's replace_best: strictly higher loss
    best_x.index_put_({better}, x.index({better}));
    best_loss.index_put_({better}, losses.index({better}));
  };
  for (int s = 0; s < p.steps; ++s) {
    auto [losses, g, logits] = loss_and_grad(f, xa, cls, p);
    torch::NoGradGuard no_grad;
    if (s == 0 && first_logits) *first_logits = logits;
    if (p.use_best) keep_best(losses, xa);
    torch::Tensor xn;
    if (p.norm == "linf") {
      xn = xa + p.alpha * g.sign();
      const auto delta = torch::clamp(xn - x0, -p.eps, p.eps);
      xn = torch::clamp(x0 + delta, 0, 1);
    } else {
      const auto gn = per_input(g).norm(2, 1) + 1e-10;
      xn = xa + p.alpha * (g / as_images(gn, g));
      auto delta = xn - x0;
      const auto dn = per_input(delta).norm(2, 1);
      // torchattacks computes eps / ‖δ‖ as reciprocal(‖δ‖) · eps (peers.md §8): same bits.
      const auto factor = torch::min(dn.reciprocal() * p.eps, torch::ones_like(dn));
      xn = torch::clamp(x0 + delta * as_images(factor, delta), 0, 1);
    }
    if (p.early_stop) {
      const auto done = successful(f(xa).argmax(1), cls, p);
      xn = torch::where(as_images(done, xn), xa, xn);
      if (done.all().item<bool>()) {
        xa = xn;
        break;
      }
    }
    xa = xn.detach();
  }
  if (!p.use_best) return xa;
  torch::NoGradGuard no_grad;
  keep_best(per_input_loss(f(xa), cls, p), xa);
  return best_x;
}

}  // namespace

attack_outcome attack(const logits_fn& f, const torch::Tensor& x, const torch::Tensor& y,
                      const std::vector<std::int64_t>& ids, const attack_params& p) {
  attack_outcome out;
  const auto x0 = x.detach();
  // The clean logits come free with the first gradient when the attack starts at x0 and needs no
  // target from them; otherwise one forward pass first.
  const bool first_step_is_clean = !p.targeted() && (p.method == "fgsm" || !p.random_start);
  torch::Tensor clean_logits;
  if (!first_step_is_clean) {
    torch::NoGradGuard no_grad;
    clean_logits = f(x0);
  }
  if (!p.targeted()) {
    out.target = y;
  } else if (p.target == "least-likely") {
    out.target = clean_logits.argmin(1);
  } else if (p.target == "random") {
    const auto k = clean_logits.size(1);
    out.target = torch::empty_like(y);
    for (std::size_t i = 0; i < ids.size(); ++i) {
      auto gen = input_generator(p.seed, ids[i], 0);
      // A class other than the true one, uniformly.
      auto t = torch::randint(k - 1, {1}, gen, torch::kLong).item<int64_t>();
      out.target[static_cast<int64_t>(i)] = t >= y[static_cast<int64_t>(i)].item<int64_t>() ? t + 1 : t;
    }
  } else {
    const int64_t t = std::stol(p.target);
    const auto k = clean_logits.size(1);
    if (t >= k) throw std::invalid_argument("--target " + p.target + " is not a class of a model with " + std::to_string(k) + " outputs");
    out.target = torch::full_like(y, t);
  }
  if (p.method == "fgsm") {
    auto [losses, g, logits] = loss_and_grad(f, x0, out.target, p);
    torch::NoGradGuard no_grad;
    clean_logits = logits;
    out.adv = torch::clamp(x0 + p.eps * g.sign(), 0, 1);
  } else {
    for (int r = 0; r <= p.restarts; ++r) {
      auto start = p.random_start ? random_start(x0, ids, p, static_cast<std::uint64_t>(r)) : x0.clone();
      auto adv = pgd(f, x0, start, out.target, p, r == 0 && first_step_is_clean ? &clean_logits : nullptr);
      torch::NoGradGuard no_grad;
      if (r == 0) {
        out.adv = adv;
      } else {
        // Madry's restarts: a later attempt replaces the kept one where it succeeds.
        const auto ok = successful(f(adv).argmax(1), out.target, p);
        out.adv = torch::where(as_images(ok, adv), adv, out.adv);
      }
    }
  }
  torch::NoGradGuard no_grad;
  out.clean_pred = clean_logits.argmax(1);
  out.adv = out.adv.detach();
  out.adv_pred = f(out.adv).argmax(1);
  const auto d = per_input(out.adv - x0);
  out.linf = d.abs().amax(1);
  out.l2 = d.norm(2, 1);
  return out;
}

void run_attack_plugin(const attack_options& o) {
  check_device(o.common.device);
  configure_threads(o.common.threads);
  const auto& p = o.attack;
  auto rec = nlohmann::json::parse(o.record);
  const auto data = dataset::open(o.data);
  const auto pre = resolve_preprocessing(o.data, data->native_channels());
  tapped_model model(o.model, o.common.device);
  if (!o.layers.empty()) model.select(o.layers);
  model.freeze();
  // The attack works on [0,1] images: the loader does not normalise, the forward pass does.
  auto unit_pre = pre;
  std::fill(unit_pre.mean.begin(), unit_pre.mean.end(), 0.f);
  std::fill(unit_pre.std.begin(), unit_pre.std.end(), 1.f);
  auto selected = select_inputs(o.data, data->size(), o.limit);
  image_batches images(*data, unit_pre, std::move(selected.ids));
  const std::uint64_t n = images.size();
  const auto c = static_cast<int64_t>(pre.mean.size());
  const auto mean = torch::tensor(pre.mean).view({c, 1, 1}).to(model.device());
  const auto std = torch::tensor(pre.std).view({c, 1, 1}).to(model.device());
  const logits_fn f = [&](const torch::Tensor& x) { return model.logits((x - mean) / std); };

  std::vector<std::vector<int64_t>> tap_shapes;
  double clean_ok = 0, adv_ok = 0, linf_sum = 0, linf_max = 0, l2_sum = 0, l2_max = 0;
  std::uint64_t seen = 0;
  const double tol_linf = p.eps * 1e-6 + 1e-6, tol_l2 = p.eps * 1e-5 + 1e-6;  // float32 rounding of x0 + δ
  auto run = [&](const loaded& b) {
    const auto x = b.x.to(model.device());
    const auto y = torch::tensor(b.labels, torch::kLong).to(model.device());
    attack_outcome r;
    try {
      r = attack(f, x, y, b.ids, p);
    } catch (const c10::Error& e) {
      throw std::runtime_error("model '" + o.model + "' rejects input of shape " + c10::str(b.x.sizes()) + ": " +
                               first_line(e));
    } catch (const std::runtime_error& e) {
      throw std::runtime_error(quote_name(o.model) + ": " + first_line(e));
    }
    // Every output is checked: inside the ball (to float tolerance) and inside [0,1].
    const double lim = p.norm == "linf" ? p.eps + tol_linf : p.eps + tol_l2;
    const double worst = (p.norm == "linf" ? r.linf : r.l2).max().item<double>();
    if (worst > lim || r.adv.min().item<double>() < 0 || r.adv.max().item<double>() > 1)
      throw std::logic_error("attack produced a perturbation outside the eps-ball or [0,1] (a bug): " +
                             std::to_string(worst) + " > " + std::to_string(p.eps));
    computed out{{}, b.ids, b.labels};
    auto put = [&](const torch::Tensor& t) { out.data.push_back(t.to(torch::kCPU, torch::kFloat32).contiguous()); };
    put(r.adv);
    put(r.linf);
    put(r.l2);
    put(r.clean_pred);
    put(r.adv_pred);
    if (p.targeted()) put(r.target);
    if (!o.layers.empty()) {
      const auto acts = model.forward((r.adv - mean) / std);
      for (std::size_t i = 0; i < o.layers.size(); ++i) {
        if (!acts[i].isTensor()) throw std::runtime_error("layer '" + o.layers[i] + "' does not return a tensor");
        const auto t = acts[i].toTensor();
        check_tap(t, o.layers[i], o.model, b.x.size(0), tap_shapes.empty() ? nullptr : &tap_shapes[i], b.ids.front());
        put(t);
      }
    }
    const auto yc = y.to(torch::kCPU);
    clean_ok += r.clean_pred.cpu().eq(yc).sum().item<double>();
    adv_ok += r.adv_pred.cpu().eq(yc).sum().item<double>();
    linf_sum += r.linf.sum().item<double>();
    l2_sum += r.l2.sum().item<double>();
    linf_max = std::max(linf_max, r.linf.max().item<double>());
    l2_max = std::max(l2_max, r.l2.max().item<double>());
    seen += b.ids.size();
    return out;
  };

  // Probe the first input: the model's output width (bounds the labels) and the tap shapes.
  const auto head = images.load(0, 1);
  {
    torch::NoGradGuard no_grad;
    try {
      images.set_classes(f(head.x.to(model.device())).size(1));
    } catch (const c10::Error& e) {
      throw std::runtime_error("model '" + o.model + "' rejects input of shape " + c10::str(head.x.sizes()) + ": " +
                               first_line(e));
    }
    if (!o.layers.empty()) {
      const auto acts = model.forward((head.x.to(model.device()) - mean) / std);
      for (std::size_t i = 0; i < o.layers.size(); ++i) {
        if (!acts[i].isTensor()) throw std::runtime_error("layer '" + o.layers[i] + "' does not return a tensor");
        tap_shapes.push_back(acts[i].toTensor().sizes().slice(1).vec());
      }
    }
  }
  const auto label = head.labels.front();
  if (label >= images.classes())
    throw io_error(data->item_name(0) + ": label " + std::to_string(label) + " is out of range [0, " +
                   std::to_string(images.classes()) + ") for the model's " + std::to_string(images.classes()) + " outputs");
  if (p.targeted() && p.target != "random" && p.target != "least-likely" && std::stoll(p.target) >= images.classes())
    throw usage_error("--target " + p.target + " is not a class of a model with " + std::to_string(images.classes()) + " outputs");
  images.set_input_shape(head.x.sizes().slice(1).vec());

  io::header hdr;
  std::vector<std::size_t> img(head.x.sizes().begin() + 1, head.x.sizes().end());
  hdr.layers = {{"adversarial", img}, {"perturbation_linf", {}}, {"perturbation_l2", {}}, {"clean_pred", {}}, {"adv_pred", {}}};
  if (p.targeted()) hdr.layers.push_back({"target", {}});
  for (std::size_t i = 0; i < o.layers.size(); ++i)
    hdr.layers.push_back({o.layers[i], std::vector<std::size_t>(tap_shapes[i].begin(), tap_shapes[i].end())});

  add_run_context(rec, o.common.device, o.model, data->describe());
  rec["seeds"] = {{"attack", p.seed}, {"scheme", "splitmix64(seed, input id, stream) per input; stream 0 target, 1+k start of attempt k"}};
  rec["params"] = {{"attack", p.to_json()},  {"layers", o.layers}, {"batch_size", o.common.batch_size},
                   {"threads", resolved_threads(o.common.threads)}, {"limit", o.limit}, {"rows", n}, {"ids", selected.id_list},
                   {"shard", selected.shard},
                   {"preprocessing", pre.to_json()}};
  hdr.provenance.push_back(rec.dump());
  io::store_options sopt;
  sopt.batch_rows = o.common.batch_size;
  auto sink = open_sink(o.output, hdr, sopt, false);
  const double secs = run_pipeline("attack", o.output, 0, n, o.common.batch_size, o.common.quiet, images, run, *sink);

  const double N = static_cast<double>(seen);
  rec["timing"] = {{"rows", seen}, {"seconds", secs}, {"rows_per_second", N / secs}};
  rec["summary"] = {{"clean_accuracy", clean_ok / N}, {"robust_accuracy", adv_ok / N},
                    {"linf_mean", linf_sum / N},      {"linf_max", linf_max},
                    {"l2_mean", l2_sum / N},          {"l2_max", l2_max}};
  std::vector<std::string> log{rec.dump()};
  sink->finish(&log);
  std::fprintf(stderr,
               "attack: %llu inputs, clean accuracy %.2f%%, robust accuracy %.2f%%, L-inf mean %.4g max %.4g, "
               "L2 mean %.4g max %.4g\n",
               static_cast<unsigned long long>(seen), 100 * clean_ok / N, 100 * adv_ok / N, linf_sum / N, linf_max,
               l2_sum / N, l2_max);
}

}  // namespace shapebias::tools
