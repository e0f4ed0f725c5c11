// SPDX-License-Identifier: MIT
// `shapebias dump`: data set → preprocessing → model with taps → store or stream.
// Three stages overlap: a loader thread decodes and preprocesses batch k+1 while the model runs
// batch k, and a writer thread writes batch k-1. Bounded queues hold at most two batches between
// stages, so memory does not depend on the number of inputs.
#include <ATen/Parallel.h>
#include <torch/script.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <exception>
#include <thread>

#include "common/bounded_queue.hpp"
#include "common/dataset.hpp"
#include "common/endpoints.hpp"
#include "common/plugin.hpp"
#include "common/provenance.hpp"
#include "torch/model.hpp"
#include "torch/preprocess.hpp"
#include "torch/runtime.hpp"

namespace shapebias::tools {
namespace {

struct loaded {
  torch::Tensor x;
  std::vector<std::int64_t> ids, labels;
};

struct computed {
  std::vector<torch::Tensor> taps;  // contiguous float32 on the CPU
  std::vector<std::int64_t> ids, labels;
};

/// Remembers the first failure of any stage.
class failure {
 public:
  void set(std::exception_ptr e) {
    std::lock_guard lk(m_);
    if (!e_) e_ = e;
  }
  bool failed() {
    std::lock_guard lk(m_);
    return static_cast<bool>(e_);
  }
  void rethrow() {
    std::lock_guard lk(m_);
    if (e_) std::rethrow_exception(e_);
  }

 private:
  std::mutex m_;
  std::exception_ptr e_;
};

// Set by SIGINT/SIGTERM: stop after the batches already computed, keeping a resumable partial
// store. A second signal ends the process at once (the handler restores the default).
std::atomic<bool> interrupted{false};
extern "C" void on_interrupt(int sig) {
  interrupted = true;
  std::signal(sig, SIG_DFL);
}

}  // namespace

void run_dump_plugin(const dump_options& o) {
  check_device(o.common.device);
  configure_threads(o.common.threads);
  auto rec = nlohmann::json::parse(o.record);
  const auto data = dataset::open(o.data);
  const auto pre = resolve_preprocessing(o.data, data->native_channels());
  tapped_model model(o.model, o.common.device);
  auto taps = o.layers;
  taps.push_back("logits");  // always computed: its width bounds the labels
  model.select(taps);
  const std::uint64_t n = o.limit ? std::min<std::uint64_t>(o.limit, data->size()) : data->size();

  // Known after the probe, read-only afterwards: the model's output width, the input size of
  // every image, and each tap's shape per input. Every batch is checked against them.
  std::atomic<std::int64_t> classes{-1};
  std::vector<int64_t> input_shape;
  std::vector<std::vector<int64_t>> tap_shapes;
  auto load = [&](std::uint64_t first, std::size_t count) {
    loaded b;
    std::vector<torch::Tensor> xs;
    for (std::uint64_t i = first; i < first + count; ++i) {
      auto x = preprocess(data->load(i), pre);
      if (!input_shape.empty() && x.sizes() != c10::IntArrayRef(input_shape))
        throw io_error(data->item_name(i) + ": preprocessed to " + c10::str(x.sizes()) + ", the first image to " +
                       c10::str(c10::IntArrayRef(input_shape)) + "; use --resize and --crop to make them equal");
      const auto label = data->label(i);
      if (classes > 0 && label >= classes)
        throw io_error(data->item_name(i) + ": label " + std::to_string(label) + " is out of range [0, " +
                       std::to_string(classes) + ") for the model's " + std::to_string(classes) + " outputs");
      xs.push_back(std::move(x));
      b.ids.push_back(static_cast<std::int64_t>(i));
      b.labels.push_back(label);
    }
    b.x = torch::stack(xs);
    return b;
  };
  auto run = [&](const loaded& b) {
    std::vector<torch::jit::IValue> out;
    try {
      out = model.forward(b.x.to(model.device()));
    } catch (const std::exception& e) {
      throw std::runtime_error("model '" + o.model + "' rejects input of shape " + c10::str(b.x.sizes()) + ": " +
                               first_line(e));
    }
    computed c{{}, b.ids, b.labels};
    for (std::size_t i = 0; i < o.layers.size(); ++i) {
      if (!out[i].isTensor())
        throw std::runtime_error("layer '" + o.layers[i] + "' of '" + o.model + "' returns a " + out[i].tagKind() +
                                 ", not a tensor");
      auto t = out[i].toTensor();
      if (t.dim() < 1 || t.size(0) != b.x.size(0))
        throw std::runtime_error("layer '" + o.layers[i] + "' of '" + o.model + "' has shape " + c10::str(t.sizes()) +
                                 "; its first axis is not the batch");
      if (!tap_shapes.empty() && t.sizes().slice(1) != c10::IntArrayRef(tap_shapes[i]))
        throw std::runtime_error("layer '" + o.layers[i] + "' of '" + o.model + "' gives " + c10::str(t.sizes().slice(1)) +
                                 " per input for rows from " + std::to_string(b.ids.front()) + ", but " +
                                 c10::str(c10::IntArrayRef(tap_shapes[i])) + " for the first input");
      c.taps.push_back(t.to(torch::kCPU, torch::kFloat32).contiguous());
    }
    if (out.back().isTensor() && out.back().toTensor().dim() == 2) classes = out.back().toTensor().size(1);
    return c;
  };

  // Probe with the first input: layer shapes, the model's output width, and a clear error when
  // the model rejects the input size.
  const auto head = load(0, 1);
  const auto probe = run(head);
  input_shape = head.x.sizes().slice(1).vec();
  for (const auto& t : probe.taps) tap_shapes.push_back(t.sizes().slice(1).vec());
  if (classes > 0 && data->num_classes() > static_cast<std::size_t>(classes))
    throw std::runtime_error("data set " + quote_name(o.data.path) + " has " + std::to_string(data->num_classes()) +
                             " classes, more than the " + std::to_string(classes) + " outputs of '" + o.model + "'");
  io::header hdr;
  for (std::size_t i = 0; i < o.layers.size(); ++i)
    hdr.layers.push_back({o.layers[i], std::vector<std::size_t>(tap_shapes[i].begin(), tap_shapes[i].end())});

  rec["device"] = o.common.device;
  rec["libraries"].update(torch_versions());
  rec["model"] = {{"path", o.model}, {"sha256", sha256_file(o.model)}};
  rec["inputs"] = nlohmann::json::array({data->describe()});
  rec["seeds"] = nlohmann::json::object();  // dump draws no random numbers
  rec["params"] = {{"layers", o.layers},     {"batch_size", o.common.batch_size}, {"threads", resolved_threads(o.common.threads)},
                   {"limit", o.limit},       {"rows", n},                         {"preprocessing", pre.to_json()},
                   {"deflate", o.deflate},   {"resume", o.resume}};
  io::store_options sopt;
  sopt.deflate = o.deflate;
  sopt.batch_rows = o.common.batch_size;
  sopt.resume_key = sha256_text(nlohmann::json{rec["model"]["sha256"], rec["inputs"], pre.to_json(), o.layers}.dump());
  hdr.provenance.push_back(rec.dump());

  std::uint64_t start = 0;
  auto sink = open_sink(o.output, hdr, sopt, o.resume, &start);
  if (start > n)
    throw std::runtime_error(quote_name(o.output) + ": the partial store holds " + std::to_string(start) +
                             " rows, more than the " + std::to_string(n) + " requested");

  const std::size_t bs = o.common.batch_size;
  bounded_queue<loaded> to_model(2);
  bounded_queue<computed> to_writer(2);
  failure fail;
  progress prog("dump", n, o.common.quiet);
  prog.update(start);

  const auto t0 = std::chrono::steady_clock::now();
  std::signal(SIGINT, on_interrupt);
  std::signal(SIGTERM, on_interrupt);
  std::thread loader([&] {
    at::set_num_threads(1);  // decoding must not compete with the model for cores
    try {
      for (std::uint64_t first = start; first < n && !fail.failed() && !interrupted; first += bs)
        if (!to_model.push(load(first, static_cast<std::size_t>(std::min<std::uint64_t>(bs, n - first))))) break;
    } catch (...) {
      fail.set(std::current_exception());
    }
    to_model.close();
  });
  std::thread writer([&] {
    try {
      std::uint64_t done = start;
      while (auto c = to_writer.pop()) {
        if (fail.failed()) continue;
        io::batch_view v{c->ids.size(), c->ids.data(), c->labels.data(), {}};
        for (const auto& t : c->taps) v.data.push_back(t.data_ptr<float>());
        sink->write(v);
        prog.update(done += v.rows);
      }
    } catch (...) {
      fail.set(std::current_exception());
      to_model.close();
      to_writer.close();  // unblocks the model stage if it waits to hand over a batch
    }
  });
  try {
    while (auto b = to_model.pop()) {
      if (fail.failed()) break;
      if (!to_writer.push(run(*b))) break;
    }
  } catch (...) {
    fail.set(std::current_exception());
  }
  to_model.close();
  to_writer.close();
  loader.join();
  writer.join();
  prog.finish();
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  fail.rethrow();
  if (interrupted)
    throw std::runtime_error(is_hdf5_name(o.output) ? "interrupted; the rows written so far are kept in " +
                                                               quote_name(o.output + ".partial") + ": rerun with --resume"
                                                         : "interrupted; the stream ends without its end record");
  // Timing of the pipelined loop (load, forward, write), for stores; a stream's header is already out.
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  rec["timing"] = {{"rows", n - start}, {"seconds", secs}, {"rows_per_second", static_cast<double>(n - start) / secs}};
  std::vector<std::string> log{rec.dump()};
  sink->finish(&log);
}

}  // namespace shapebias::tools
