// SPDX-License-Identifier: MIT
// `shapebias train`: standard and PGD adversarial training of a TorchScript module, built-in
// architectures made in C++ (no Python), checkpoints that resume, and a per-epoch log.
#include <torch/script.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>

#include "common/endpoints.hpp"
#include "common/plugin.hpp"
#include "common/provenance.hpp"
#include "common/rng.hpp"
#include "torch/attack.hpp"
#include "torch/pipeline.hpp"
#include "torch/runtime.hpp"

namespace shapebias::tools {
namespace {

namespace fs = std::filesystem;
namespace jit = torch::jit;

// ---- built-in architectures ----------------------------------------------------------------------

jit::Module leaf(const std::shared_ptr<jit::CompilationUnit>& cu, const std::string& cls, const std::string& forward) {
  jit::Module m(c10::QualifiedName("__torch__.shapebias.builtin." + cls), cu, /*shouldMangle=*/true);
  m.define(forward);
  return m;
}

jit::Module conv(const std::shared_ptr<jit::CompilationUnit>& cu, const std::string& cls, int64_t in, int64_t out) {
  jit::Module m(c10::QualifiedName("__torch__.shapebias.builtin." + cls), cu, true);
  // PyTorch's default initialisation of nn.Conv2d: kaiming_uniform(a=√5), bias U(±1/√fan_in).
  auto w = torch::empty({out, in, 3, 3});
  torch::nn::init::kaiming_uniform_(w, std::sqrt(5.0));
  const double bound = 1.0 / std::sqrt(static_cast<double>(in * 9));
  m.register_parameter("weight", w.requires_grad_(), false);
  m.register_parameter("bias", torch::empty({out}).uniform_(-bound, bound).requires_grad_(), false);
  m.define("def forward(self, x):\n  return torch.conv2d(x, self.weight, self.bias, [1, 1], [1, 1])\n");
  return m;
}

jit::Module linear(const std::shared_ptr<jit::CompilationUnit>& cu, const std::string& cls, int64_t in, int64_t out) {
  jit::Module m(c10::QualifiedName("__torch__.shapebias.builtin." + cls), cu, true);
  auto w = torch::empty({out, in});
  torch::nn::init::kaiming_uniform_(w, std::sqrt(5.0));
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  m.register_parameter("weight", w.requires_grad_(), false);
  m.register_parameter("bias", torch::empty({out}).uniform_(-bound, bound).requires_grad_(), false);
  m.define("def forward(self, x):\n  return torch.matmul(x, self.weight.t()) + self.bias\n");
  return m;
}

/// fashion-cnn[:W]: conv(W) relu pool conv(2W) relu pool conv(4W) relu, flatten, linear, for
/// in × h × w inputs. Every stage is a submodule, so every stage can be tapped (conv1 … fc).
jit::Module fashion_cnn(int64_t in, int64_t h, int64_t wd, int64_t classes, int64_t w) {
  auto cu = std::make_shared<jit::CompilationUnit>();
  jit::Module top(c10::QualifiedName("__torch__.shapebias.builtin.FashionCNN"), cu, true);
  const char* relu = "def forward(self, x):\n  return torch.relu(x)\n";
  const char* pool = "def forward(self, x):\n  return torch.max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], False)\n";
  top.register_module("conv1", conv(cu, "Conv2d", in, w));
  top.register_module("relu1", leaf(cu, "ReLU", relu));
  top.register_module("pool1", leaf(cu, "MaxPool2d", pool));
  top.register_module("conv2", conv(cu, "Conv2d", w, 2 * w));
  top.register_module("relu2", leaf(cu, "ReLU", relu));
  top.register_module("pool2", leaf(cu, "MaxPool2d", pool));
  top.register_module("conv3", conv(cu, "Conv2d", 2 * w, 4 * w));
  top.register_module("relu3", leaf(cu, "ReLU", relu));
  top.register_module("flatten", leaf(cu, "Flatten", "def forward(self, x):\n  return torch.flatten(x, 1)\n"));
  top.register_module("fc", linear(cu, "Linear", 4 * w * (h / 4) * (wd / 4), classes));
  // Submodules defined from C++ have no __call__: their forward is called by name.
  top.define(
      "def forward(self, x):\n"
      "  x = self.pool1.forward(self.relu1.forward(self.conv1.forward(x)))\n"
      "  x = self.pool2.forward(self.relu2.forward(self.conv2.forward(x)))\n"
      "  x = self.relu3.forward(self.conv3.forward(x))\n"
      "  return self.fc.forward(self.flatten.forward(x))\n");
  return top;
}

jit::Module build_arch(const std::string& spec, const std::vector<int64_t>& input, int64_t classes) {
  const auto colon = spec.find(':');
  const std::string name = spec.substr(0, colon);
  int64_t width = 32;
  if (colon != std::string::npos) {
    try {
      width = std::stoll(spec.substr(colon + 1));
    } catch (const std::exception&) {
      width = 0;
    }
  }
  if (name != "fashion-cnn") throw usage_error("--arch: unknown architecture '" + name + "' (built in: fashion-cnn[:WIDTH])");
  if (width < 1 || width > 4096) throw usage_error("--arch " + spec + ": the width must be a number from 1 to 4096");
  if (input[1] < 4 || input[2] < 4) throw usage_error("--arch fashion-cnn needs inputs of at least 4 x 4 pixels");
  return fashion_cnn(input[0], input[1], input[2], classes, width);
}

// ---- helpers -------------------------------------------------------------------------------------

/// Random crop after zero padding and/or a horizontal flip, drawn per input from (seed, epoch, id).
torch::Tensor augment(const torch::Tensor& x, const std::vector<std::int64_t>& ids, bool crop, bool flip, int pad,
                      std::uint64_t seed, int epoch) {
  if (!crop && !flip) return x;
  const auto h = x.size(2), w = x.size(3);
  const auto padded = crop ? torch::constant_pad_nd(x, {pad, pad, pad, pad}, 0) : x;
  auto out = torch::empty_like(x);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    std::mt19937_64 rng(stream_seed(seed ^ 0x5eedULL, ids[i], static_cast<std::uint64_t>(epoch)));
    auto img = padded[static_cast<int64_t>(i)];
    if (crop) {
      std::uniform_int_distribution<int64_t> off(0, 2 * pad);
      const auto top = off(rng), left = off(rng);
      img = img.narrow(1, top, h).narrow(2, left, w);
    }
    if (flip && std::bernoulli_distribution(0.5)(rng)) img = img.flip({2});
    out[static_cast<int64_t>(i)].copy_(img);
  }
  return out;
}

void write_atomically(const fs::path& p, const std::string& text) {
  const auto tmp = p.string() + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << text;
    if (!f.flush()) throw io_error(quote_name(tmp) + ": write failed");
  }
  fs::rename(tmp, p);
}

struct epoch_row {
  int epoch;
  double lr, loss, train_acc, clean_acc, robust_acc, seconds;
};

std::string csv(const std::vector<epoch_row>& rows) {
  std::string s = "epoch,lr,loss,train_accuracy,clean_accuracy,robust_accuracy,seconds\n";
  char buf[256];
  for (const auto& r : rows) {
    std::snprintf(buf, sizeof buf, "%d,%.8g,%.8g,%.6f,%.6f,%.6f,%.3f\n", r.epoch, r.lr, r.loss, r.train_acc, r.clean_acc,
                  r.robust_acc, r.seconds);
    s += buf;
  }
  return s;
}

}  // namespace

void run_train_plugin(const train_options& o) {
  check_device(o.common.device);
  configure_threads(o.common.threads);
  const torch::Device device(o.common.device);
  auto rec = nlohmann::json::parse(o.record);
  const fs::path dir(o.output);
  fs::create_directories(dir);

  // Data: the attack and the model see [0,1] images; --normalize is applied inside the forward pass.
  const auto data = dataset::open(o.data);
  const auto pre = resolve_preprocessing(o.data, data->native_channels());
  auto unit_pre = pre;
  std::fill(unit_pre.mean.begin(), unit_pre.mean.end(), 0.f);
  std::fill(unit_pre.std.begin(), unit_pre.std.end(), 1.f);
  image_batches train_images(*data, unit_pre);
  std::unique_ptr<dataset> eval;
  const auto data_desc = data->describe();  // hashes the data files: once
  if (!o.eval_data.empty() || data_desc["format"] == "idx") {
    auto e = o.data;
    if (o.eval_data.empty()) e.split = o.data.split == "train" ? "test" : "train";
    else e.path = o.eval_data, e.format = "auto";
    eval = dataset::open(e);
  }
  std::optional<image_batches> eval_images;
  if (eval) eval_images.emplace(*eval, unit_pre);
  const std::uint64_t n = o.limit ? std::min<std::uint64_t>(o.limit, data->size()) : data->size();
  const std::uint64_t n_eval = !eval ? 0 : o.eval_limit ? std::min<std::uint64_t>(o.eval_limit, eval->size()) : eval->size();

  // The model.
  const auto head = train_images.load(0, 1);
  const int64_t channels = head.x.size(1);
  const int64_t classes = static_cast<int64_t>(data->num_classes() ? data->num_classes() : 0);
  jit::Module module;
  std::string model_desc;
  if (!o.arch.empty()) {
    if (classes <= 0) throw usage_error("--arch needs a data set that declares its classes (IDX or an image folder)");
    torch::manual_seed(o.seed);
    module = build_arch(o.arch, head.x.sizes().slice(1).vec(), classes);
    model_desc = "builtin:" + o.arch + " in=" + std::to_string(channels) + " classes=" + std::to_string(classes);
  } else {
    if (!fs::exists(o.model)) throw io_error(quote_name(o.model) + ": cannot open model: no such file");
    module = jit::load(o.model);
    model_desc = "file:" + sha256_file(o.model);
  }
  const auto c = static_cast<int64_t>(pre.mean.size());
  const auto mean = torch::tensor(pre.mean).view({c, 1, 1}).to(device);
  const auto std = torch::tensor(pre.std).view({c, 1, 1}).to(device);
  const std::string name = o.arch.empty() ? o.model : "--arch " + o.arch;
  const logits_fn f = [&](const torch::Tensor& x) {
    auto out = module.forward({(x - mean) / std});
    if (out.isTuple()) out = out.toTuple()->elements().at(0);
    if (!out.isTensor() || out.toTensor().dim() != 2 || out.toTensor().size(0) != x.size(0))
      throw std::runtime_error("model " + quote_name(name) + " must return [B, K] logits; it returned " +
                               (out.isTensor() ? c10::str(out.toTensor().sizes()) : "a " + out.tagKind()));
    return out.toTensor();
  };

  const bool crop = o.augment.find("crop") != std::string::npos, flip = o.augment.find("flip") != std::string::npos;
  attack_params p = o.attack;
  p.method = "pgd";
  p.random_start = true;
  p.seed = o.seed;
  rec["device"] = o.common.device;
  rec["libraries"].update(torch_versions());
  rec["model"] = o.arch.empty() ? nlohmann::json{{"path", o.model}, {"sha256", sha256_file(o.model)}}
                                : nlohmann::json{{"arch", o.arch}, {"in_channels", channels}, {"classes", classes}};
  rec["inputs"] = nlohmann::json::array({data_desc});
  if (eval) rec["inputs"].push_back(eval->describe());
  rec["seeds"] = {{"train", o.seed},
                  {"scheme", "init: torch::manual_seed(seed); per epoch e: shuffle mt19937_64(stream_seed(seed, -1, e)), "
                             "augmentation mt19937_64(stream_seed(seed ^ 0x5eed, id, e)), PGD seed stream_seed(seed, -2, e) "
                             "then per input as in attack"}};
  rec["params"] = {{"epochs", o.epochs}, {"batch_size", o.common.batch_size}, {"lr", o.lr}, {"momentum", o.momentum},
                   {"weight_decay", o.weight_decay}, {"schedule", o.schedule}, {"step_epochs", o.step_epochs},
                   {"gamma", o.gamma}, {"augment", o.augment}, {"crop_padding", o.crop_padding},
                   {"adversarial", o.adversarial}, {"attack", p.to_json()}, {"limit", o.limit}, {"rows", n},
                   {"eval_limit", o.eval_limit}, {"eval_rows", n_eval}, {"preprocessing", pre.to_json()},
                   {"threads", resolved_threads(o.common.threads)},
                   {"robust_evaluation", "PGD with the attack settings above, random start seeded per held-out input"}};
  const std::string key = sha256_text(nlohmann::json{model_desc, rec["inputs"], rec["params"]}.dump());

  // Resume from the last checkpoint, or start.
  std::vector<torch::Tensor> params;
  std::vector<epoch_row> rows;
  int first_epoch = 0;
  const auto ckpt_json = dir / "checkpoint.json";
  if (o.resume && fs::exists(ckpt_json)) {
    nlohmann::json ck;
    try {
      ck = nlohmann::json::parse(std::ifstream(ckpt_json));
      if (ck.at("key").get<std::string>() != key)
        throw io_error(quote_name(ckpt_json.string()) + ": the checkpoint was made with other settings, model or data; "
                       "remove the folder or run without --resume");
      first_epoch = ck.at("epochs_done").get<int>();
      for (const auto& r : ck.at("log"))
        rows.push_back({r.at(0).get<int>(), r.at(1).get<double>(), r.at(2).get<double>(), r.at(3).get<double>(),
                        r.at(4).get<double>(), r.at(5).get<double>(), r.at(6).get<double>()});
    } catch (const nlohmann::json::exception&) {
      throw io_error(quote_name(ckpt_json.string()) + ": corrupt checkpoint description");
    }
    module = jit::load((dir / "checkpoint.pt").string());
  }
  module.to(device);
  for (const auto& t : module.parameters()) params.push_back(t.requires_grad_(true));
  if (params.empty()) throw std::runtime_error("model " + quote_name(name) + " has no parameters to train");
  torch::optim::SGD opt(params, torch::optim::SGDOptions(o.lr).momentum(o.momentum).weight_decay(o.weight_decay));
  if (first_epoch > 0) torch::load(opt, (dir / "optimizer.pt").string());
  if (first_epoch > 0)
    std::fprintf(stderr, "train: resuming %s after epoch %d of %d\n", quote_name(o.output).c_str(), first_epoch, o.epochs);

  // Probe: the model accepts the input and its output width covers the labels.
  {
    torch::NoGradGuard no_grad;
    module.eval();
    torch::Tensor out;
    try {
      out = f(head.x.to(device));
    } catch (const c10::Error& e) {
      throw std::runtime_error("model " + quote_name(name) + " rejects input of shape " + c10::str(head.x.sizes()) + ": " +
                               first_line(e));
    }
    train_images.set_classes(out.size(1));
    if (eval_images) eval_images->set_classes(out.size(1));
    train_images.set_input_shape(head.x.sizes().slice(1).vec());
  }

  const auto bs = static_cast<std::uint64_t>(o.common.batch_size);
  auto accuracy = [&](bool robust) {
    if (!eval_images || n_eval == 0) return std::nan("");
    double ok = 0;
    module.eval();
    for (std::uint64_t first = 0; first < n_eval; first += bs) {
      const auto b = eval_images->load(first, static_cast<std::size_t>(std::min(bs, n_eval - first)));
      auto x = b.x.to(device);
      const auto y = torch::tensor(b.labels, torch::kLong).to(device);
      if (robust) x = attack(f, x, y, b.ids, p).adv;
      torch::NoGradGuard no_grad;
      ok += f(x).argmax(1).eq(y).sum().item<double>();
    }
    return ok / static_cast<double>(n_eval);
  };

  const int last = o.stop_after ? std::min(o.epochs, first_epoch + o.stop_after) : o.epochs;
  for (int epoch = first_epoch; epoch < last; ++epoch) {
    const auto t0 = std::chrono::steady_clock::now();
    const double lr = o.schedule == "cosine" ? o.lr * 0.5 * (1 + std::cos(M_PI * epoch / o.epochs))
                                             : o.lr * std::pow(o.gamma, epoch / o.step_epochs);
    for (auto& g : opt.param_groups()) static_cast<torch::optim::SGDOptions&>(g.options()).lr(lr);
    std::vector<std::uint64_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), std::mt19937_64(stream_seed(o.seed, -1, static_cast<std::uint64_t>(epoch))));
    double loss_sum = 0, correct = 0;
    progress prog("train epoch " + std::to_string(epoch + 1), n, o.common.quiet);
    for (std::uint64_t first = 0; first < n; first += bs) {
      const std::vector<std::uint64_t> ids(order.begin() + static_cast<std::ptrdiff_t>(first),
                                           order.begin() + static_cast<std::ptrdiff_t>(std::min(n, first + bs)));
      const auto b = train_images.load(ids);
      auto x = augment(b.x, b.ids, crop, flip, o.crop_padding, o.seed, epoch).to(device);
      const auto y = torch::tensor(b.labels, torch::kLong).to(device);
      if (o.adversarial == "pgd") {
        module.eval();  // the attack sees the model as it is used (no dropout, batch-norm statistics fixed)
        auto pe = p;
        pe.seed = stream_seed(o.seed, -2, static_cast<std::uint64_t>(epoch));
        x = attack(f, x, y, b.ids, pe).adv;
      }
      module.train();
      const auto logits = f(x);
      const auto loss = torch::nn::functional::cross_entropy(logits, y);
      opt.zero_grad();
      loss.backward();
      opt.step();
      loss_sum += loss.item<double>() * static_cast<double>(ids.size());
      correct += logits.argmax(1).eq(y).sum().item<double>();
      prog.update(first + ids.size());
    }
    prog.finish();
    const double clean = accuracy(false), robust = accuracy(true);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    rows.push_back({epoch + 1, lr, loss_sum / static_cast<double>(n), correct / static_cast<double>(n), clean, robust, secs});
    std::fprintf(stderr, "train: epoch %d/%d  lr %.4g  loss %.4f  train acc %.2f%%  held-out clean %.2f%%  PGD %.2f%%  %.1f s\n",
                 epoch + 1, o.epochs, lr, rows.back().loss, 100 * rows.back().train_acc, 100 * clean, 100 * robust, secs);
    // Checkpoint: model, optimizer, then the description that makes them count (written last).
    module.eval();
    module.save((dir / "checkpoint.pt.tmp").string());
    fs::rename(dir / "checkpoint.pt.tmp", dir / "checkpoint.pt");
    torch::save(opt, (dir / "optimizer.pt.tmp").string());
    fs::rename(dir / "optimizer.pt.tmp", dir / "optimizer.pt");
    nlohmann::json log = nlohmann::json::array();
    for (const auto& r : rows) log.push_back({r.epoch, r.lr, r.loss, r.train_acc, r.clean_acc, r.robust_acc, r.seconds});
    write_atomically(ckpt_json, nlohmann::json{{"key", key}, {"epochs_done", epoch + 1}, {"log", log}}.dump());
    write_atomically(dir / "log.csv", csv(rows));
  }

  if (last < o.epochs) {
    std::fprintf(stderr, "train: stopped after epoch %d of %d; continue with --resume\n", last, o.epochs);
    return;
  }
  // The final model, and the log as an HDF5 store with the run's provenance.
  module.eval();
  module.save((dir / "model.pt.tmp").string());
  fs::rename(dir / "model.pt.tmp", dir / "model.pt");
  rec["output_model"] = {{"path", (dir / "model.pt").string()}, {"sha256", sha256_file((dir / "model.pt").string())}};
  nlohmann::json log = nlohmann::json::array();
  for (const auto& r : rows)
    log.push_back({{"epoch", r.epoch}, {"lr", r.lr}, {"loss", r.loss}, {"train_accuracy", r.train_acc},
                   {"clean_accuracy", std::isnan(r.clean_acc) ? nlohmann::json() : nlohmann::json(r.clean_acc)},
                   {"robust_accuracy", std::isnan(r.robust_acc) ? nlohmann::json() : nlohmann::json(r.robust_acc)},
                   {"seconds", r.seconds}});
  rec["log"] = log;
  io::header hdr;
  for (const char* col : {"lr", "loss", "train_accuracy", "clean_accuracy", "robust_accuracy", "seconds"})
    hdr.layers.push_back({col, {}});
  hdr.provenance.push_back(rec.dump());
  io::store_writer w((dir / "train.h5").string(), hdr);
  std::vector<std::int64_t> ids, zeros(rows.size(), 0);
  std::vector<std::vector<float>> cols(6);
  for (const auto& r : rows) {
    ids.push_back(r.epoch);
    for (auto [i, v] : {std::pair{0, r.lr}, {1, r.loss}, {2, r.train_acc}, {3, r.clean_acc}, {4, r.robust_acc}, {5, r.seconds}})
      cols[static_cast<std::size_t>(i)].push_back(static_cast<float>(v));
  }
  io::batch_view v{rows.size(), ids.data(), zeros.data(), {}};
  for (const auto& col : cols) v.data.push_back(col.data());
  if (!rows.empty()) w.write(v);
  w.finish();
}

}  // namespace shapebias::tools
