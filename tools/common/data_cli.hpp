// SPDX-License-Identifier: MIT
// The data-set and preprocessing options shared by every verb that reads images.
#pragma once

#include "common/dataset.hpp"
#include "common/plugin.hpp"

namespace shapebias::tools {

inline constexpr const char* transform_help =
    "A dataset variant, made after resizing and cropping, before --noise and normalisation: none, gray, "
    "scramble:G (G x G patches permuted), edges[:SIGMA,LOW,HIGH] (Canny, default 0.4,0.35,0.9), "
    "silhouette[:THRESHOLD] (filled mask of pixels above THRESHOLD, default 0.05) or silhouette:masks=DIR "
    "(segmentation PNGs named as the images)";

/// `selection`: also the options that choose and perturb inputs (--ids, --noise), for the verbs
/// that stream a data set once in order (dump, attack).
/// `data_name`: "data" (a required positional argument) or an option name such as "--data".
inline void add_data_options(CLI::App& app, data_options& d, bool selection = false, const char* data_name = "data") {
  auto* data = app.add_option(data_name, d.path,
                              "Data set: a Fashion-MNIST/MNIST IDX folder, an image folder (one subfolder per class), "
                              "a Broden-format probe set (a folder with index.csv; label 0), or a list file of "
                              "'path label' lines")
                   ->group("Input");
  if (data_name[0] != '-') data->required();
  app.add_option("--format", d.format, "Data set format")
      ->check(CLI::IsMember({"auto", "idx", "folder", "broden", "list"}))->group("Input")->capture_default_str();
  app.add_option("--split", d.split, "IDX split")->check(CLI::IsMember({"train", "test"}))->group("Input")
      ->capture_default_str();
  app.add_option("--channels", d.channels, "Convert images to 1 (luma) or 3 (RGB) channels; 0 keeps them")
      ->check(CLI::IsMember({0, 1, 3}))->group("Preprocessing")->capture_default_str();
  app.add_option("--resize", d.resize, "Resize the shorter side to N pixels (bilinear, antialiased, as torchvision)")
      ->check(CLI::NonNegativeNumber)->group("Preprocessing")->capture_default_str();
  app.add_option("--crop", d.crop, "Centre crop N x N pixels after resizing")
      ->check(CLI::NonNegativeNumber)->group("Preprocessing")->capture_default_str();
  app.add_option("--normalize", d.normalize,
                 "Normalisation after scaling to [0,1]: none, imagenet, netdissect (NetDissect-Lite's Caffe "
                 "mean, / 0.224), or MEAN/STD with comma lists (e.g. 0.286/0.353)")
      ->group("Preprocessing")->capture_default_str();
  if (!selection) return;
  app.add_option("--ids", d.ids, "Use only the inputs whose ids (0-based positions in the data set) are listed in "
                                 "FILE, one or more per line ('#' starts a comment), in that order")
      ->group("Input");
  app.add_option("--noise", d.noise, "Add Gaussian noise of this standard deviation to each image in [0,1] space, "
                                     "before normalisation; seeded per input id")
      ->check(CLI::NonNegativeNumber)->group("Preprocessing")->capture_default_str();
  app.add_option("--noise-seed", d.noise_seed, "Seed of the noise (with the input id: an image's noise never depends "
                                               "on its batch)")
      ->group("Preprocessing")->capture_default_str();
  app.add_flag("!--no-noise-clip", d.noise_clip, "Do not clip noisy images to [0,1]")->group("Preprocessing");
  app.add_option("--transform", d.transform, transform_help)->group("Preprocessing")->capture_default_str();
  app.add_option("--transform-seed", d.transform_seed, "Seed of random transforms (scramble), per input id")
      ->group("Preprocessing")->capture_default_str();
}

/// --shard K/N and --mpi: the options of the verbs whose partial results `shapebias merge` combines
/// (dump, attack, eval, tv, dissect, diversity). The shard is applied where inputs are selected
/// (select_inputs for data sets, shard::contains for the rows of stores and streams).
inline void add_shard_options(CLI::App& app, std::string& shard, bool& mpi) {
  app.add_option("--shard", shard, "Process only shard K of N (0 <= K < N): the inputs whose id mod N is K, after --ids "
                                   "and --limit. Write each shard to its own output; 'shapebias merge' combines them")
      ->check(CLI::Validator(
          [](std::string& s) {
            try {
              shard::parse(s);
              return std::string();
            } catch (const usage_error& e) {
              return std::string(e.what()).substr(std::string(e.what()).find(": ") + 2);
            }
          },
          "K/N"))
      ->group("Scale-out");
  app.add_flag("--mpi", mpi, "Under mpirun or srun: rank R of P processes shard R/P, and rank 0 merges the results and "
                             "writes the output (needs a shapebias built with MPI)")
      ->excludes("--shard")->group("Scale-out");
}

}  // namespace shapebias::tools
