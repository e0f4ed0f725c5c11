// SPDX-License-Identifier: MIT
// The verbs that run models live in a plugin (libshapebias_torch.so) that is loaded only when one
// of them runs: linking LibTorch costs ~0.4 s of start-up, which --help, view and every verb
// without a model must not pay. Options are parsed before the plugin is loaded and handed to it
// as the structs below.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/attack_params.hpp"
#include "common/cli.hpp"

namespace shapebias::tools {

/// A data set and its preprocessing (see `shapebias dump --help`).
struct data_options {
  std::string path;
  std::string format = "auto";  // auto, idx, folder, broden, list
  std::string split = "test";   // idx: train or test
  int channels = 0;             // 0: as stored; 1 or 3: convert
  int resize = 0;               // shorter side, 0: none
  int crop = 0;                 // centre crop, 0: none
  std::string normalize = "none";
  std::string ids;              // a file of input ids to use, in its order (empty: all)
  std::string shard;            // K/N: only the inputs whose id mod N is K (empty: all; see dataset.hpp)
  double noise = 0;             // Gaussian noise sigma added in [0,1] space (0: none)
  std::uint64_t noise_seed = 0;
  bool noise_clip = true;       // clip noisy images to [0,1]
  std::string transform = "none";  // a dataset variant made on the fly (see transform_spec)
  std::uint64_t transform_seed = 212;
};

struct dump_options {
  common_options common;
  std::string model;
  data_options data;
  std::vector<std::string> layers;
  std::vector<std::string> ablate;  // LAYER:zero|keep:CHANNELS (common/ablation.hpp)
  std::string output;
  std::uint64_t limit = 0;
  bool resume = false;
  int deflate = 0;
  std::string record;  // this step's provenance record so far (JSON)
};

struct attack_options {
  common_options common;
  std::string model;
  data_options data;
  attack_params attack;
  std::vector<std::string> layers;  // activations of the adversarial images to store as well
  std::string output;
  std::uint64_t limit = 0;
  std::string record;
};

struct train_options {
  common_options common;
  std::string model;            // a TorchScript file, or empty with arch
  std::string arch;             // built-in architecture, e.g. "fashion-cnn" or "fashion-cnn:16"
  data_options data;            // training data
  std::string eval_data;        // held-out data (default: the IDX test split of an IDX training set)
  std::uint64_t limit = 0;      // training subset (first N)
  std::uint64_t eval_limit = 1000;
  int epochs = 10;
  int stop_after = 0;           // train at most this many epochs in this call (0: all); --resume continues
  double lr = 0.05, momentum = 0.9, weight_decay = 5e-4;
  std::string schedule = "cosine";  // cosine | step
  int step_epochs = 30;
  double gamma = 0.1;
  std::string augment = "crop,flip";  // none, or a comma list of crop, flip
  int crop_padding = 2;
  std::string adversarial = "none";   // none | pgd
  attack_params attack;               // the PGD used for training (when pgd) and for robust evaluation
  std::uint64_t seed = 0;
  bool resume = false;
  std::string output;                 // a folder
  std::string record;
};

struct transform_options {
  common_options common;
  data_options data;
  std::string output;  // a folder
  std::uint64_t limit = 0;
  std::string record;
};

struct layers_options {
  common_options common;
  std::string model;
  std::vector<std::int64_t> input_size;
};

/// A model parameter with four axes (a convolution's [out, in, kH, kW] weights), copied out.
struct conv_weights {
  std::string name;  // the module path, e.g. "features.0" (the parameter name without ".weight")
  std::vector<std::size_t> shape;
  std::vector<float> values;
};

/// The plugin's entry points (extern "C" names, resolved with dlsym). Each throws on failure.
struct plugin_api {
  void (*dump)(const dump_options&);
  void (*layers)(const layers_options&);
  void (*attack)(const attack_options&);
  void (*train)(const train_options&);
  const char* (*libtorch_version)();
  /// The 4-D weight parameters of a TorchScript model, in the model's parameter order.
  void (*weights)(const std::string& model, std::vector<conv_weights>& out);
  void (*transform)(const transform_options&);
};

/// Loads the plugin once (beside the executable, or in LIBDIR/shapebias when installed).
/// Throws std::runtime_error naming the paths tried.
const plugin_api& plugin();

/// dlopen()s the plugin `file` (e.g. "libshapebias_mpi.so") from beside the executable or from
/// LIBDIR/shapebias: its handle and path, or nullopt (with the paths appended to `tried`) when it
/// is in neither. Throws std::runtime_error with dlerror() when it is there but does not load.
std::optional<std::pair<void*, std::string>> open_plugin(const std::string& file, const std::string& what, int flags,
                                                         std::string& tried);

}  // namespace shapebias::tools
