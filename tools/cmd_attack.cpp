// SPDX-License-Identifier: MIT
// `shapebias attack`: options; the work runs in the LibTorch plugin.
#include "common/data_cli.hpp"
#include "common/merge.hpp"
#include "common/plugin.hpp"
#include "common/provenance.hpp"

namespace shapebias::tools {

int run_attack(std::span<char*> args) {
  attack_options o;
  auto& a = o.attack;
  CLI::App app{"Make adversarial examples of a data set for a TorchScript model and write them, with their\n"
               "perturbation norms, clean and adversarial predictions and every setting, to an HDF5 store\n"
               "(-o FILE.h5) or a stream. Images are attacked in [0,1]; --normalize is applied inside the\n"
               "model's forward pass. The defaults are torchattacks 3.5.1's PGD; all are recorded.\n\n"
               "Example: shapebias attack fashion_cnn.pt /usr/share/datasets/fashion-mnist --norm l2 --eps 1 \\\n"
               "           --alpha 0.25 --steps 7 --best -o adv.h5",
               "shapebias attack"};
  app.add_option("model", o.model, "TorchScript model file returning [B, K] logits")->required()->group("Input");
  add_data_options(app, o.data, true);
  app.add_option("--limit", o.limit, "Attack only the first N inputs (of --ids when given; 0: all)")->group("Input")->capture_default_str();
  app.add_option("--method", a.method, "fgsm or pgd")->group("Attack")->capture_default_str();
  app.add_option("--norm", a.norm, "linf or l2")->group("Attack")->capture_default_str();
  app.add_option("--eps", a.eps, "Radius of the perturbation, in [0,1] pixel units")->group("Attack")->capture_default_str();
  app.add_option("--alpha", a.alpha, "PGD step size")->group("Attack")->capture_default_str();
  app.add_option("--steps", a.steps, "PGD iterations")->group("Attack")->capture_default_str();
  app.add_flag("!--no-random-start", a.random_start, "Start PGD at the clean image instead of a random point of the ball")
      ->group("Attack");
  app.add_flag("--best", a.use_best, "Return each input's highest-loss iterate (Madry's use_best), not the last")
      ->group("Attack");
  app.add_option("--restarts", a.restarts, "Extra random restarts; an input keeps the first that fools the model")
      ->group("Attack")->capture_default_str();
  app.add_option("--loss", a.loss, "ce (cross-entropy) or margin (on logits)")->group("Attack")->capture_default_str();
  app.add_flag("--early-stop", a.early_stop, "Stop moving an input once it is misclassified (or reaches its target)")
      ->group("Attack");
  app.add_option("--target", a.target, "none (untargeted), random (another class, seeded per input), least-likely, "
                                        "or a class index")
      ->group("Attack")->capture_default_str();
  app.add_option("--seed", a.seed, "Seed; with each input's id it fixes that input's random start and target")
      ->group("Attack")->capture_default_str();
  app.add_option("-l,--layers", o.layers, "Also store these layers' activations for the adversarial images")
      ->delimiter(',')->group("Output");
  app.add_option("-o,--output", o.output, "FILE.h5 (HDF5 store), '-' (stream to stdout) or FILE (stream)")->group("Output");
  bool mpi = false;
  add_shard_options(app, o.data.shard, mpi);
  add_common_options(app, o.common);
  if (!parse(app, args)) return 0;
  a.validate();
  o.output = stream_output(o.output);
  o.record = start_record("attack", args).dump();
  if (!mpi) {
    plugin().attack(o);
    return 0;
  }
  run_ranks(o.output, false, o.common.quiet, [&](const std::string& shard, const std::string& part) {
    auto r = o;
    r.data.shard = shard;
    r.output = part;
    plugin().attack(r);
  });
  return 0;
}

}  // namespace shapebias::tools
