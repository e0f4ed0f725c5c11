// SPDX-License-Identifier: MIT
// `shapebias transform`: writes a dataset variant as an image folder; the work runs in the plugin.
#include "common/data_cli.hpp"
#include "common/dataset.hpp"
#include "common/plugin.hpp"
#include "common/provenance.hpp"

namespace shapebias::tools {

int run_transform(std::span<char*> args) {
  transform_options o;
  CLI::App app{"Write a variant of a data set (paper-spec §2.2) as PNG images: <label>/<id>.png under the output\n"
               "folder, with list.txt ('path label', in input order: a list-file data set with the same ids and\n"
               "labels as the input) and provenance.json. The variant is made after --resize and --crop, then\n"
               "--noise is added; images are written in [0,1] (no normalisation), rounded to 8 bits.\n"
               "'eval' and 'dump' make the same variants on the fly with --transform and --noise.\n\n"
               "Example: shapebias transform /usr/share/datasets/fashion-mnist --transform scramble:2 -o fmnist-scrambled",
               "shapebias transform"};
  add_data_options(app, o.data, true);
  app.add_option("--limit", o.limit, "Process only the first N inputs (0: all)")->group("Input")->capture_default_str();
  app.add_option("-o,--output", o.output, "Output folder (written as FOLDER.partial and renamed at the end)")
      ->required()->group("Output");
  add_common_options(app, o.common);
  if (!parse(app, args)) return 0;
  transform_spec::parse(o.data.transform);  // a malformed spec is a usage error, before any work
  if (o.data.normalize != "none")
    throw usage_error("--normalize: transform writes images in [0,1]; normalisation belongs to the model's input");
  if (o.data.transform == "none" && o.data.noise == 0)
    throw usage_error("nothing to do: give --transform and/or --noise");
  o.record = start_record("transform", args).dump();
  plugin().transform(o);
  return 0;
}

}  // namespace shapebias::tools
