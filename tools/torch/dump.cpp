// SPDX-License-Identifier: MIT
// The streaming pipeline (torch/pipeline.hpp), and `shapebias dump`: data set → preprocessing →
// model with taps → store or stream.
#include <ATen/Parallel.h>
#include <torch/script.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <exception>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/bounded_queue.hpp"
#include "common/dataset.hpp"
#include "common/endpoints.hpp"
#include "common/output_folder.hpp"
#include "common/plugin.hpp"
#include "common/provenance.hpp"
#include "shapebias/io/provenance.hpp"
#include "torch/model.hpp"
#include "torch/pipeline.hpp"
#include "torch/preprocess.hpp"
#include "torch/runtime.hpp"

namespace shapebias::tools {
namespace {

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

loaded image_batches::load(std::uint64_t first, std::size_t count) const {
  std::vector<std::uint64_t> ids(count);
  for (std::size_t k = 0; k < count; ++k) ids[k] = subset_.empty() ? first + k : subset_.at(first + k);
  return load(ids);
}

loaded image_batches::load(const std::vector<std::uint64_t>& ids) const {
  loaded b;
  std::vector<torch::Tensor> xs;
  for (const auto i : ids) {
    auto x = preprocess(data_.load(i), pre_, static_cast<std::int64_t>(i), data_.item_path(i));
    if (!input_shape_.empty() && x.sizes() != c10::IntArrayRef(input_shape_))
      throw io_error(data_.item_name(i) + ": preprocessed to " + c10::str(x.sizes()) + ", the first image to " +
                     c10::str(c10::IntArrayRef(input_shape_)) + "; use --resize and --crop to make them equal");
    const auto label = data_.label(i);
    const auto k = classes_.load();
    if (k > 0 && label >= k)
      throw io_error(data_.item_name(i) + ": label " + std::to_string(label) + " is out of range [0, " +
                     std::to_string(k) + ") for the model's " + std::to_string(k) + " outputs");
    xs.push_back(std::move(x));
    b.ids.push_back(static_cast<std::int64_t>(i));
    b.labels.push_back(label);
  }
  b.x = torch::stack(xs);
  return b;
}

void check_tap(const torch::Tensor& t, const std::string& layer, const std::string& model, std::int64_t rows,
               const std::vector<int64_t>* expected, std::int64_t first_id) {
  if (t.dim() < 1 || t.size(0) != rows)
    throw std::runtime_error("layer '" + layer + "' of " + quote_name(model) + " has shape " + c10::str(t.sizes()) +
                             "; its first axis is not the batch");
  if (expected && t.sizes().slice(1) != c10::IntArrayRef(*expected))
    throw std::runtime_error("layer '" + layer + "' of " + quote_name(model) + " gives " + c10::str(t.sizes().slice(1)) +
                             " per input for rows from " + std::to_string(first_id) + ", but " +
                             c10::str(c10::IntArrayRef(*expected)) + " for the first input");
}

double run_pipeline(const std::string& verb, const std::string& output, std::uint64_t start, std::uint64_t n,
                    std::size_t bs, bool quiet, const image_batches& images,
                    const std::function<computed(const loaded&)>& compute, io::batch_sink& sink) {
  bounded_queue<loaded> to_model(2);
  bounded_queue<computed> to_writer(2);
  failure fail;
  progress prog(verb, n, quiet);
  prog.update(start);
  interrupted = false;
  const auto t0 = std::chrono::steady_clock::now();
  std::signal(SIGINT, on_interrupt);
  std::signal(SIGTERM, on_interrupt);
  std::thread loader([&] {
    at::set_num_threads(1);  // decoding must not compete with the model for cores
    try {
      for (std::uint64_t first = start; first < n && !fail.failed() && !interrupted; first += bs)
        if (!to_model.push(images.load(first, static_cast<std::size_t>(std::min<std::uint64_t>(bs, n - first))))) break;
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
        for (const auto& t : c->data) v.data.push_back(t.data_ptr<float>());
        sink.write(v);
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
      if (!to_writer.push(compute(*b))) break;
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
    throw std::runtime_error(output.empty()         ? "interrupted; nothing is kept"
                             : is_hdf5_name(output) ? "interrupted; the rows written so far are kept in " +
                                                          quote_name(output + ".partial") + ": rerun with --resume"
                                                    : "interrupted; the stream ends without its end record");
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

namespace {

/// Writes each row of a batch of [0,1] images as <label>/<id>.png under a folder, and at the end
/// list.txt ("path label", in row order: a list-file data set with the same ids and labels).
class png_folder_sink : public io::batch_sink {
 public:
  png_folder_sink(const std::string& dir, std::vector<int64_t> shape) : out_(dir), shape_(std::move(shape)) {}
  void write(const io::batch_view& b) override {
    const int64_t C = shape_[0], H = shape_[1], W = shape_[2];
    image img{static_cast<int>(H), static_cast<int>(W), static_cast<int>(C), {}};
    img.pixels.resize(static_cast<std::size_t>(C * H * W));
    for (std::size_t r = 0; r < b.rows; ++r) {
      const float* x = b.data[0] + r * static_cast<std::size_t>(C * H * W);
      for (int64_t c = 0; c < C; ++c)
        for (int64_t i = 0; i < H * W; ++i)  // [C, H, W] floats → [H, W, C] bytes, rounded half up
          img.pixels[static_cast<std::size_t>(i * C + c)] =
              static_cast<std::uint8_t>(std::clamp(std::floor(x[c * H * W + i] * 255.f + 0.5f), 0.f, 255.f));
      char name[32];
      std::snprintf(name, sizeof name, "%08lld.png", static_cast<long long>(b.ids[r]));
      const std::string label = std::to_string(b.labels[r]), rel = label + "/" + name;
      std::filesystem::create_directories(out_.path(label));
      write_png(out_.path(rel), img);
      list_ += rel + " " + label + "\n";
    }
  }
  void finish(const std::vector<std::string>* log) override {
    out_.write("list.txt", list_);
    if (log) out_.write("provenance.json", nlohmann::json::parse(log->back()).dump(2) + "\n");
    out_.commit();
  }

 private:
  output_folder out_;
  std::vector<int64_t> shape_;
  std::string list_;
};

}  // namespace

void run_transform_plugin(const transform_options& o) {
  configure_threads(o.common.threads);
  auto rec = nlohmann::json::parse(o.record);
  const auto data = dataset::open(o.data);
  auto pre = resolve_preprocessing(o.data, data->native_channels());
  std::fill(pre.mean.begin(), pre.mean.end(), 0.f);  // images stay in [0,1]
  std::fill(pre.std.begin(), pre.std.end(), 1.f);
  image_batches images(*data, pre, o.data.ids.empty() ? std::vector<std::uint64_t>{} : read_id_list(o.data.ids, data->size()));
  const std::uint64_t n = o.limit ? std::min<std::uint64_t>(o.limit, images.size()) : images.size();
  const auto head = images.load(0, 1);
  images.set_input_shape(head.x.sizes().slice(1).vec());
  rec["inputs"] = nlohmann::json::array({data->describe()});
  rec["params"] = {{"preprocessing", pre.to_json()}, {"rows", n}, {"limit", o.limit},
                   {"ids", describe_id_list(o.data.ids, images.subset())},
                   {"output", "PNG per input, <label>/<id>.png, rounded half up from [0,1]; list.txt in input order"}};
  png_folder_sink sink(o.output, head.x.sizes().slice(1).vec());
  auto run = [](const loaded& b) { return computed{{b.x.contiguous()}, b.ids, b.labels}; };
  // "": a folder is not resumable; an interrupted one is removed.
  const double secs = run_pipeline("transform", "", 0, n, o.common.batch_size, o.common.quiet, images, run, sink);
  rec["timing"] = {{"rows", n}, {"seconds", secs}};
  rec["finished"] = io::utc_now();
  std::vector<std::string> log{rec.dump()};
  sink.finish(&log);
}

void run_dump_plugin(const dump_options& o) {
  check_device(o.common.device);
  configure_threads(o.common.threads);
  auto rec = nlohmann::json::parse(o.record);
  const auto data = dataset::open(o.data);
  const auto pre = resolve_preprocessing(o.data, data->native_channels());
  tapped_model model(o.model, o.common.device);
  std::vector<ablation> ablations;
  for (const auto& a : o.ablate) ablations.push_back(ablation::parse(a, "--ablate"));
  model.ablate(ablations);
  auto taps = o.layers;
  taps.push_back("logits");  // always computed: its width bounds the labels
  model.select(taps);
  auto selected = select_inputs(o.data, data->size(), o.limit);
  image_batches images(*data, pre, std::move(selected.ids));
  const std::uint64_t n = images.size();

  // Each tap's shape per input, from the first input; every later batch is checked against it.
  std::vector<std::vector<int64_t>> tap_shapes;
  auto run = [&](const loaded& b) {
    std::vector<torch::jit::IValue> out;
    try {
      out = model.forward(b.x.to(model.device()));
    } catch (const std::exception& e) {
      std::string ablated;
      for (const auto& a : ablations) ablated += (ablated.empty() ? " with --ablate " : ", ") + a.to_string();
      throw std::runtime_error("model '" + o.model + "'" + ablated + " rejects input of shape " + c10::str(b.x.sizes()) +
                               ": " + first_line(e));
    }
    computed c{{}, b.ids, b.labels};
    for (std::size_t i = 0; i < o.layers.size(); ++i) {
      if (!out[i].isTensor())
        throw std::runtime_error("layer '" + o.layers[i] + "' of '" + o.model + "' returns a " + out[i].tagKind() +
                                 ", not a tensor");
      const auto t = out[i].toTensor();
      check_tap(t, o.layers[i], o.model, b.x.size(0), tap_shapes.empty() ? nullptr : &tap_shapes[i], b.ids.front());
      c.data.push_back(t.to(torch::kCPU, torch::kFloat32).contiguous());
    }
    if (out.back().isTensor() && out.back().toTensor().dim() == 2) images.set_classes(out.back().toTensor().size(1));
    return c;
  };

  // Probe with the first input: layer shapes, the model's output width, and a clear error when
  // the model rejects the input size.
  const auto head = images.load(0, 1);
  const auto probe = run(head);
  images.set_input_shape(head.x.sizes().slice(1).vec());
  for (const auto& t : probe.data) tap_shapes.push_back(t.sizes().slice(1).vec());
  const auto classes = images.classes();
  if (classes > 0 && data->num_classes() > static_cast<std::size_t>(classes))
    throw std::runtime_error("data set " + quote_name(o.data.path) + " has " + std::to_string(data->num_classes()) +
                             " classes, more than the " + std::to_string(classes) + " outputs of '" + o.model + "'");
  io::header hdr;
  for (std::size_t i = 0; i < o.layers.size(); ++i)
    hdr.layers.push_back({o.layers[i], std::vector<std::size_t>(tap_shapes[i].begin(), tap_shapes[i].end())});

  add_run_context(rec, o.common.device, o.model, data->describe());
  rec["seeds"] = nlohmann::json::object();  // dump draws no random numbers
  rec["params"] = {{"layers", o.layers},     {"batch_size", o.common.batch_size}, {"threads", resolved_threads(o.common.threads)},
                   {"limit", o.limit},       {"rows", n},                         {"preprocessing", pre.to_json()},
                   {"deflate", o.deflate},   {"resume", o.resume},
                   {"ids", selected.id_list},  {"shard", selected.shard}};
  rec["params"]["ablate"] = nlohmann::json::array();
  for (const auto& a : ablations)
    rec["params"]["ablate"].push_back({{"layer", a.layer}, {"mode", a.keep ? "keep" : "zero"}, {"channels", a.channels}});
  io::store_options sopt;
  sopt.deflate = o.deflate;
  sopt.batch_rows = o.common.batch_size;
  sopt.resume_key = sha256_text(
      nlohmann::json{rec["model"]["sha256"], rec["inputs"], pre.to_json(), o.layers, rec["params"]["ids"],
                     rec["params"]["ablate"], rec["params"]["shard"]}.dump());
  hdr.provenance.push_back(rec.dump());

  std::uint64_t start = 0;
  auto sink = open_sink(o.output, hdr, sopt, o.resume, &start);
  if (start > n)
    throw std::runtime_error(quote_name(o.output) + ": the partial store holds " + std::to_string(start) +
                             " rows, more than the " + std::to_string(n) + " requested");
  const double secs = run_pipeline("dump", o.output, start, n, o.common.batch_size, o.common.quiet, images, run, *sink);
  // Timing of the pipelined loop, for stores; a stream's header is already out.
  rec["timing"] = {{"rows", n - start}, {"seconds", secs}, {"rows_per_second", static_cast<double>(n - start) / secs}};
  std::vector<std::string> log{rec.dump()};
  sink->finish(&log);
}

}  // namespace shapebias::tools
