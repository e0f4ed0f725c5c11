// SPDX-License-Identifier: MIT
// `shapebias train`: options; the work runs in the LibTorch plugin.
#include "common/data_cli.hpp"
#include "common/plugin.hpp"
#include "common/provenance.hpp"

namespace shapebias::tools {

int run_train(std::span<char*> args) {
  train_options o;
  auto& a = o.attack;
  a.eps = 0.1;
  a.alpha = 0.025;
  a.steps = 7;
  CLI::App app{"Train a model on a data set, standard or with PGD adversarial training, and save it as\n"
               "TorchScript. The model is a TorchScript file (--model) or a built-in architecture (--arch\n"
               "fashion-cnn[:WIDTH], made in C++). Each epoch reports loss, training accuracy, and clean and\n"
               "PGD accuracy on held-out data; a checkpoint after each epoch allows --resume.\n\n"
               "Output folder: model.pt (final), checkpoint.pt + optimizer.pt + checkpoint.json, log.csv,\n"
               "and train.h5 (one row per epoch, with the provenance of the run).\n\n"
               "Example: shapebias train /usr/share/datasets/fashion-mnist --split train --arch fashion-cnn \\\n"
               "           --adversarial pgd --eps 0.1 --alpha 0.025 --steps 7 --epochs 5 -o models/fashion_r",
               "shapebias train"};
  add_data_options(app, o.data);
  auto* model = app.add_option("--model", o.model, "TorchScript model to train (its parameters are updated)")->group("Model");
  app.add_option("--arch", o.arch, "Built-in architecture: fashion-cnn[:WIDTH] (convs of WIDTH, 2·WIDTH, 4·WIDTH; default 32)")
      ->group("Model")->excludes(model);
  app.add_option("--limit", o.limit, "Train on the first N inputs only (0: all)")->group("Input")->capture_default_str();
  app.add_option("--eval-data", o.eval_data, "Held-out data set [the IDX test split when the data are IDX]")->group("Input");
  app.add_option("--eval-limit", o.eval_limit, "Held-out inputs evaluated after each epoch (0: all)")
      ->group("Input")->capture_default_str();
  app.add_option("--epochs", o.epochs, "Epochs")->check(CLI::PositiveNumber)->group("Training")->capture_default_str();
  app.add_option("--stop-after", o.stop_after, "Stop after this many epochs in this call (0: run to --epochs); "
                                               "continue later with --resume")
      ->check(CLI::NonNegativeNumber)->group("Training")->capture_default_str();
  app.add_option("--lr", o.lr, "Initial learning rate (SGD)")->check(CLI::PositiveNumber)->group("Training")->capture_default_str();
  app.add_option("--momentum", o.momentum, "SGD momentum")->check(CLI::Range(0.0, 1.0))->group("Training")->capture_default_str();
  app.add_option("--weight-decay", o.weight_decay, "SGD weight decay")->check(CLI::NonNegativeNumber)->group("Training")
      ->capture_default_str();
  app.add_option("--schedule", o.schedule, "Learning-rate schedule: cosine (per epoch, to 0) or step")
      ->check(CLI::IsMember({"cosine", "step"}))->group("Training")->capture_default_str();
  app.add_option("--step-epochs", o.step_epochs, "step: multiply the rate by --gamma every N epochs")
      ->check(CLI::PositiveNumber)->group("Training")->capture_default_str();
  app.add_option("--gamma", o.gamma, "step: the factor")->check(CLI::PositiveNumber)->group("Training")->capture_default_str();
  app.add_option("--augment", o.augment, "none, or a comma list of crop (random crop after zero padding) and flip "
                                         "(horizontal, p = 0.5)")
      ->group("Training")->capture_default_str();
  app.add_option("--crop-padding", o.crop_padding, "Padding for the random crop")->check(CLI::NonNegativeNumber)
      ->group("Training")->capture_default_str();
  app.add_option("--adversarial", o.adversarial, "none (standard training) or pgd (train on PGD examples)")
      ->check(CLI::IsMember({"none", "pgd"}))->group("Adversarial")->capture_default_str();
  app.add_option("--norm", a.norm, "PGD norm: linf or l2 (training and robust evaluation)")->group("Adversarial")
      ->capture_default_str();
  app.add_option("--eps", a.eps, "PGD radius")->group("Adversarial")->capture_default_str();
  app.add_option("--alpha", a.alpha, "PGD step size")->group("Adversarial")->capture_default_str();
  app.add_option("--steps", a.steps, "PGD steps")->group("Adversarial")->capture_default_str();
  app.add_option("--seed", o.seed, "Seed for initialisation, shuffling, augmentation and PGD starts")
      ->group("Training")->capture_default_str();
  app.add_flag("--resume", o.resume, "Continue from the output folder's checkpoint")->group("Output");
  app.add_option("-o,--output", o.output, "Output folder")->required()->group("Output");
  o.common.batch_size = 128;
  add_common_options(app, o.common);
  if (!parse(app, args)) return 0;
  if (o.model.empty() && o.arch.empty()) throw usage_error("give a model to train: --model FILE.pt or --arch fashion-cnn");
  a.method = "pgd";
  a.validate();
  if (o.augment != "none")
    for (std::size_t p = 0, q; p <= o.augment.size(); p = q + 1) {
      q = o.augment.find(',', p);
      if (q == std::string::npos) q = o.augment.size();
      const auto item = o.augment.substr(p, q - p);
      if (item != "crop" && item != "flip") throw usage_error("--augment: unknown '" + item + "' (none, crop, flip)");
    }
  o.record = start_record("train", args).dump();
  plugin().train(o);
  return 0;
}

}  // namespace shapebias::tools
