// SPDX-License-Identifier: MIT
// `shapebias layers`: options; the work runs in the LibTorch plugin.
#include "common/plugin.hpp"

namespace shapebias::tools {

int run_layers(std::span<char*> args) {
  layers_options o;
  CLI::App app{"List every tappable layer of a TorchScript model (module paths, nested ones included, in call\n"
               "order) with its class and output shape for one input of the given size.\n\n"
               "Example: shapebias layers resnet50.pt --input-size 3,224,224",
               "shapebias layers"};
  app.add_option("model", o.model, "TorchScript model file")->required()->group("Input");
  app.add_option("--input-size", o.input_size, "Input size C,H,W")
      ->required()->delimiter(',')->expected(3)->check(CLI::PositiveNumber)->group("Input");
  add_common_options(app, o.common, opt_threads | opt_device);
  if (!parse(app, args)) return 0;
  plugin().layers(o);
  return 0;
}

}  // namespace shapebias::tools
