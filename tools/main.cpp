// SPDX-License-Identifier: MIT
// The shapebias command: one table of verbs drives dispatch and `shapebias --help`.
#include <cstdio>
#include <cstring>
#include <iostream>
#include <span>
#include <string>
#include <vector>

#include "common/cli.hpp"
#include "shapebias/version.hpp"

namespace shapebias::tools {
int run_attack(std::span<char*> args);
int run_demo(std::span<char*> args);
int run_dissect(std::span<char*> args);
int run_diversity(std::span<char*> args);
int run_dump(std::span<char*> args);
int run_layers(std::span<char*> args);
int run_merge(std::span<char*> args);
int run_report(std::span<char*> args);
int run_train(std::span<char*> args);
int run_tv(std::span<char*> args);
int run_eval(std::span<char*> args);
int run_transform(std::span<char*> args);
int run_view(std::span<char*> args);
int run_version(std::span<char*> args);
}  // namespace shapebias::tools

namespace {

struct verb {
  const char* name;
  const char* help;
  int (*run)(std::span<char*>);
};

const verb verbs[] = {
    {"attack", "Make adversarial examples (FGSM, PGD L∞/L2) and store them with their norms and predictions",
     shapebias::tools::run_attack},
    {"demo", "The whole S-vs-R study on Fashion-MNIST, end to end, with the report (the main job)",
     shapebias::tools::run_demo},
    {"dissect", "Network dissection on a Broden-format probe set: unit concepts, categories per layer (feature bias)",
     shapebias::tools::run_dissect},
    {"diversity", "Top-K inputs per unit and how diverse they are: labels, embedding, facets, sparsity (simplicity bias)",
     shapebias::tools::run_diversity},
    {"dump", "Run a model on a data set and write chosen layers' activations (HDF5 or stream)",
     shapebias::tools::run_dump},
    {"eval", "Accuracy on a data set and its variants on the CL set, cue-conflict shape bias, ImageNet-C mCE",
     shapebias::tools::run_eval},
    {"layers", "List a model's tappable layers with their output shapes", shapebias::tools::run_layers},
    {"merge", "Combine the outputs of a run's shards (--shard K/N) into the output of the whole run",
     shapebias::tools::run_merge},
    {"report", "An HTML report of a results folder: charts S vs R, image grids, adversarial examples, provenance",
     shapebias::tools::run_report},
    {"train", "Train a model, standard or PGD-adversarial, and save it as TorchScript", shapebias::tools::run_train},
    {"transform", "Write a dataset variant (noise, scrambled patches, grayscale, edges, silhouettes) as images",
     shapebias::tools::run_transform},
    {"tv", "Total variation and spectra of filters or activation maps, clean vs noisy, S vs R (smoothness bias)",
     shapebias::tools::run_tv},
    {"view", "Summarise a store or stream, or convert between them", shapebias::tools::run_view},
    {"version", "Print the versions of shapebias and its libraries", shapebias::tools::run_version},
};

void usage(std::FILE* out) {
  std::fprintf(out,
               "shapebias %s: shape and simplicity biases of CNNs, measured on streamed activations\n\n"
               "Usage: shapebias COMMAND [options] [INPUT...]\n\nCommands:\n",
               shapebias::version_string);
  for (const auto& v : verbs) std::fprintf(out, "  %-9s %s\n", v.name, v.help);
  std::fprintf(out,
               "  %-9s Show a command's help (same as COMMAND --help)\n\n"
               "'-' means standard input or output. Exit status: 0 success, 1 failure, 2 bad usage.\n"
               "Example: shapebias dump model.pt /usr/share/datasets/fashion-mnist -l features.0 -o - | shapebias view -\n",
               "help");
}

int dispatch(const verb& v, std::span<char*> args) {
  try {
    return v.run(args);
  } catch (const shapebias::tools::silent_failure&) {
    return 1;
  } catch (const shapebias::tools::usage_error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "shapebias %s: %s\n", v.name, e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "shapebias %s: %s\n", v.name, e.what());
    return 1;
  }
}

int finish(int status) {
  std::cout.flush();
  if (std::fflush(stdout) != 0 || std::fclose(stdout) != 0) {
    std::fprintf(stderr, "shapebias: error writing to standard output: %s\n", std::strerror(errno));
    return status ? status : 1;
  }
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    usage(stdout);
    return finish(0);
  }
  std::string cmd = argv[1];
  if (cmd == "--help" || cmd == "-h") {
    usage(stdout);
    return finish(0);
  }
  if (cmd == "--version") cmd = "version";
  std::vector<char*> args;
  std::string help_flag = "--help";
  if (cmd == "help") {
    if (argc < 3) {
      usage(stdout);
      return finish(0);
    }
    cmd = argv[2];
    args = {argv[2], help_flag.data()};
  }
  for (const auto& v : verbs) {
    if (cmd != v.name) continue;
    std::string prog = std::string("shapebias ") + v.name;
    if (args.empty()) args.assign(argv + 1, argv + argc);
    args[0] = prog.data();
    return finish(dispatch(v, args));
  }
  std::fprintf(stderr, "shapebias: unknown command '%s' (see 'shapebias --help')\n", cmd.c_str());
  return 2;
}
