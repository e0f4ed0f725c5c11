// SPDX-License-Identifier: MIT
// `shapebias dump`: options; the work runs in the LibTorch plugin.
#include <iostream>

#include "common/ablation.hpp"
#include "common/data_cli.hpp"
#include "common/merge.hpp"
#include "common/plugin.hpp"
#include "common/provenance.hpp"

namespace shapebias::tools {

int run_dump(std::span<char*> args) {
  dump_options o;
  CLI::App app{"Run a TorchScript model on a data set and write the activations of chosen layers, batch by\n"
               "batch, to an HDF5 store (-o FILE.h5) or a stream ('-o -' or any other name).\n\n"
               "Example: shapebias dump fashion_cnn.pt /usr/share/datasets/fashion-mnist \\\n"
               "           -l features.0,features.3,logits -o - | shapebias view -",
               "shapebias dump"};
  app.add_option("model", o.model, "TorchScript model file")->required()->group("Input");
  add_data_options(app, o.data, true);
  app.add_option("--limit", o.limit, "Process only the first N inputs (of --ids when given; 0: all)")->group("Input")->capture_default_str();
  app.add_option("-l,--layers", o.layers, "Layers to tap, comma-separated (see 'shapebias layers'); "
                                          "'input' and 'logits' are always available")
      ->required()->delimiter(',')->group("Output");
  app.add_option("--ablate", o.ablate, "Zero channels of a layer's output for everything after it (paper-spec §4.4): "
                                      "LAYER:zero:CHANNELS, or LAYER:keep:CHANNELS to zero all others; repeatable")
      ->group("Input");
  app.add_option("-o,--output", o.output, "Output: FILE.h5 or FILE.hdf5 (HDF5 store), '-' (stream to stdout) or FILE (stream) "
                                          "[- when stdout is not a terminal]")
      ->group("Output");
  app.add_flag("--resume", o.resume, "Continue FILE.h5.partial left by a killed run with the same settings")
      ->group("Output");
  app.add_option("--deflate", o.deflate, "HDF5 deflate level (with shuffle); 0 stores uncompressed")
      ->check(CLI::Range(0, 9))->group("Output")->capture_default_str();
  bool mpi = false;
  add_shard_options(app, o.data.shard, mpi);
  add_common_options(app, o.common);
  if (!parse(app, args)) return 0;
  for (const auto& a : o.ablate) ablation::parse(a, "--ablate");  // usage errors before the plugin loads
  o.output = stream_output(o.output);
  o.record = start_record("dump", args).dump();
  if (!mpi) {
    plugin().dump(o);
    return 0;
  }
  run_ranks(o.output, false, o.common.quiet, [&](const std::string& shard, const std::string& part) {
    auto r = o;
    r.data.shard = shard;
    r.output = part;
    plugin().dump(r);
  });
  return 0;
}

}  // namespace shapebias::tools
