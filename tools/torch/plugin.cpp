// SPDX-License-Identifier: MIT
// The LibTorch plugin's entry points, and the `layers` verb.
#include <dlfcn.h>
#include <malloc.h>

#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/script.h>
#include <torch/version.h>

#include <opencv2/core/version.hpp>

#include <cstdio>
#include <iostream>
#include <limits>

#include "common/plugin.hpp"
#include "common/provenance.hpp"
#include "torch/model.hpp"
#include "torch/runtime.hpp"

namespace shapebias::tools {

void run_dump_plugin(const dump_options& o);      // dump.cpp
void run_transform_plugin(const transform_options& o);  // dump.cpp
void run_attack_plugin(const attack_options& o);  // attack.cpp
void run_train_plugin(const train_options& o);    // train.cpp

void configure_threads(int requested) {
  // glibc serves each large tensor with a fresh mmap and returns it on free, so every batch pays
  // page faults for all its activations and gradients (measured: 8 s of 15 s in a ResNet-50 dump).
  // Keeping freed memory in the heap lets the next batch reuse it; the peak stays that of one
  // pipeline's worth of batches.
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
  const int threads = resolved_threads(requested);
  at::set_num_threads(threads);
  // OpenBLAS starts its own threads; it is loaded as LibTorch's BLAS (libblas.so.3 → OpenBLAS).
  for (const char* lib : {"libopenblas.so.0", "libblas.so.3"}) {
    if (void* h = dlopen(lib, RTLD_NOLOAD | RTLD_LAZY)) {
      if (auto f = reinterpret_cast<void (*)(int)>(dlsym(h, "openblas_set_num_threads"))) f(threads);
      dlclose(h);
    }
  }
}

void check_device(const std::string& device) {
  try {
    const torch::Device d(device);
    if (d.is_cuda() && !torch::cuda::is_available())
      throw std::invalid_argument("--device " + device + ": CUDA is not available in this LibTorch build or machine");
  } catch (const c10::Error&) {
    throw usage_error("--device '" + device + "': not a device name (cpu, cuda, cuda:N)");
  }
}

nlohmann::json torch_versions() {
  // OpenCV makes the edges and silhouettes of --transform.
  return {{"libtorch", TORCH_VERSION}, {"opencv", CV_VERSION}, {"cuda", torch::cuda::is_available() ? "available" : "none"}};
}

void add_run_context(nlohmann::json& rec, const std::string& device, const std::string& model,
                     const nlohmann::json& data) {
  rec["device"] = device;
  rec["libraries"].update(torch_versions());
  rec["model"] = {{"path", model}, {"sha256", sha256_file(model)}};
  rec["inputs"] = nlohmann::json::array({data});
}

std::string first_line(const std::exception& e) {
  std::string s;
  if (auto* c = dynamic_cast<const c10::Error*>(&e)) s = c->what_without_backtrace();
  else s = e.what();
  // TorchScript interpreter errors quote a traceback and end with the Python-style exception line.
  if (const auto k = s.rfind("\nRuntimeError: "); k != std::string::npos) {
    const auto b = k + 15;
    return s.substr(b, s.find('\n', b) - b);
  }
  std::size_t start = s.find_first_not_of("\n ");
  if (start == std::string::npos) return s;
  return s.substr(start, s.find('\n', start) - start);
}

void run_layers_plugin(const layers_options& o) {
  check_device(o.common.device);
  configure_threads(o.common.threads);
  tapped_model m(o.model, o.common.device);
  std::vector<std::string> names;
  for (const auto& p : m.points()) names.push_back(p.name);
  m.select(names);
  std::vector<int64_t> shape{1};
  shape.insert(shape.end(), o.input_size.begin(), o.input_size.end());
  std::vector<torch::jit::IValue> out;
  try {
    out = m.forward(torch::zeros(shape, torch::TensorOptions().device(m.device())));
  } catch (const std::exception& e) {
    throw std::runtime_error("model '" + o.model + "' rejects input of shape " + c10::str(c10::IntArrayRef(shape)) +
                             ": " + first_line(e));
  }
  std::printf("# layer\ttype\toutput shape (per input)\n");
  for (std::size_t i = 0; i < out.size(); ++i) {
    std::string shp;
    if (out[i].isTensor()) {
      const auto s = out[i].toTensor().sizes();
      for (std::size_t k = 1; k < s.size(); ++k) shp += (k > 1 ? "x" : "") + std::to_string(s[k]);
    } else {
      shp = "(" + out[i].tagKind() + ", not a tensor)";
    }
    std::printf("%s\t%s\t%s\n", names[i].c_str(), m.points()[i].module_type.c_str(), shp.c_str());
  }
}

void read_conv_weights(const std::string& path, std::vector<conv_weights>& out) {
  tapped_model m(path, "cpu");
  for (const auto& p : m.module().named_parameters(/*recurse=*/true)) {
    if (p.value.dim() != 4) continue;
    conv_weights w;
    w.name = p.name;
    if (const auto dot = w.name.rfind(".weight"); dot != std::string::npos && dot + 7 == w.name.size()) w.name.resize(dot);
    const auto t = p.value.detach().to(torch::kFloat32).contiguous();
    w.shape.assign(t.sizes().begin(), t.sizes().end());
    w.values.assign(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
    out.push_back(std::move(w));
  }
}

}  // namespace shapebias::tools

extern "C" {
void shapebias_plugin_transform(const shapebias::tools::transform_options& o) {
  shapebias::tools::run_transform_plugin(o);
}
void shapebias_plugin_weights(const std::string& model, std::vector<shapebias::tools::conv_weights>& out) {
  shapebias::tools::read_conv_weights(model, out);
}
void shapebias_plugin_dump(const shapebias::tools::dump_options& o) { shapebias::tools::run_dump_plugin(o); }
void shapebias_plugin_layers(const shapebias::tools::layers_options& o) { shapebias::tools::run_layers_plugin(o); }
void shapebias_plugin_attack(const shapebias::tools::attack_options& o) { shapebias::tools::run_attack_plugin(o); }
void shapebias_plugin_train(const shapebias::tools::train_options& o) { shapebias::tools::run_train_plugin(o); }
const char* shapebias_plugin_libtorch_version() {
  static const std::string v = std::string(TORCH_VERSION) + (torch::cuda::is_available() ? " (CUDA available)" : " (CPU)");
  return v.c_str();
}
}
