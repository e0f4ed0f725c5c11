// SPDX-License-Identifier: MIT
// `shapebias demo`: the paper's whole S-vs-R study on Fashion-MNIST, end to end, with the other
// verbs run as child processes exactly as a user would run them (each step's command line is in
// demo.json and its output in logs/): train S and R (or reuse them), the variant accuracy table
// and shape-bias read-out, filter TV and spectra, activation TV clean vs noisy, dissection on a
// generated Broden-format probe set, diversity, PGD robust accuracy at several ε, and the report.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "common/child.hpp"
#include "common/cli.hpp"
#include "common/endpoints.hpp"
#include "common/output_folder.hpp"
#include "common/provenance.hpp"
#include "shapebias/io/provenance.hpp"

namespace shapebias::tools {
namespace {

namespace fs = std::filesystem;

/// How much of the data each step uses. The default fits the 15-minute budget on 2 cores.
struct sizes {
  const char* name;
  int train_limit, epochs, pgd_steps;  // training (train_limit 0: all 60,000)
  int eval_images;                     // clean test images for eval (0: all 10,000)
  int tv_images, probe_images, diversity_images, top_k, attack_images;
};

constexpr sizes presets[] = {
    {"default", 20000, 3, 7, 0, 2000, 200, 2000, 49, 1000},
    {"full", 0, 10, 7, 0, 10000, 1000, 10000, 49, 10000},
    {"tiny", 1000, 1, 3, 600, 200, 24, 200, 16, 100},  // tests: minutes become seconds
};

struct demo_options {
  common_options common;
  std::string output = "results", data = "/usr/share/datasets/fashion-mnist", preset = "default", python = "/usr/bin/python3";
  bool full = false, no_report = false;
};

class demo {
 public:
  demo(const demo_options& o, int total) : o_(o), total_(total), root_(o.output), t0_(clock::now()) {
    fs::create_directories(root_ / "logs");
    fs::create_directories(root_ / "ids");
  }

  /// Runs one step: `program` (empty: shapebias) with `args`, logged to logs/NAME.log.
  void step(const std::string& name, const std::string& what, const std::vector<std::string>& args,
            const std::string& program = "") {
    ++n_;
    const auto log = (root_ / "logs" / (name + ".log")).string();
    std::ofstream(log, std::ios::trunc).close();
    const auto t = clock::now();
    std::function<void(const std::string&)> tick;
    if (o_.common.quiet) {
    } else if (is_terminal(2)) {
      tick = [&](const std::string& last) {  // one live line: the step, its time, the child's last word
        std::string line = status(what) + "  " + last;
        if (line.size() > 118) line = line.substr(0, 115) + "...";
        std::fprintf(stderr, "\r\033[K%s", line.c_str());
      };
    } else {
      std::fprintf(stderr, "%s\n", status(what).c_str());
    }
    run_program(program, args, log, tick);
    if (tick) std::fprintf(stderr, "\r\033[K%s (%.1f s)\n", status(what).c_str(), seconds(t));
    std::string cmd = program.empty() ? "shapebias" : program;
    for (const auto& a : args) cmd += " " + a;
    steps_.push_back({{"step", name}, {"what", what}, {"command", cmd}, {"seconds", seconds(t)}, {"log", "logs/" + name + ".log"}});
  }

  void skip(const std::string& name, const std::string& why) {
    ++n_;
    if (!o_.common.quiet) std::fprintf(stderr, "%s\n", status(name + ": " + why).c_str());
    steps_.push_back({{"step", name}, {"skipped", why}});
  }

  std::string status(const std::string& what) const {
    char b[40];
    std::snprintf(b, sizeof b, "[%2d/%d %6.1fs] ", n_, total_, elapsed());
    return b + what;
  }

  std::string path(const std::string& rel) const { return (root_ / rel).string(); }
  double elapsed() const { return seconds(t0_); }
  const nlohmann::json& steps() const { return steps_; }


 private:
  using clock = std::chrono::steady_clock;
  static double seconds(clock::time_point t) { return std::chrono::duration<double>(clock::now() - t).count(); }
  const demo_options& o_;
  int total_;
  fs::path root_;
  clock::time_point t0_;
  int n_ = 0;
  nlohmann::json steps_ = nlohmann::json::array();
};

/// A file of the ids 0..n−1 (the first n inputs), for --ids.
std::string first_ids(const demo& d, int n) {
  const auto p = d.path("ids/first-" + std::to_string(n) + ".txt");
  std::ofstream f(p);
  for (int i = 0; i < n; ++i) f << i << "\n";
  if (!f) throw io_error(quote_name(p) + ": cannot write");
  return p;
}

std::string number(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", v);
  return b;
}

void run(const demo_options& o, nlohmann::json rec) {
  const sizes& z = o.full ? presets[1] : o.preset == "tiny" ? presets[2] : presets[0];
  constexpr double eps_list[] = {0.05, 0.1, 0.2};
  // train ×2, eval, tv ×2, probe, dissect, diversity, report, and an attack per model and ε.
  demo d(o, 9 + 2 * static_cast<int>(std::size(eps_list)));
  fs::remove(d.path("demo.json"));  // a previous run's record must not outlive a failing step
  const std::string threads = std::to_string(resolved_threads(o.common.threads));
  // The children's summaries go to logs/ (they show no progress there: their stderr is not a terminal).
  const std::vector<std::string> common{"-@", threads, "--device", o.common.device};
  auto with = [&](std::vector<std::string> a) {
    a.insert(a.end(), common.begin(), common.end());
    return a;
  };
  const std::string S = d.path("models/S/model.pt"), R = d.path("models/R/model.pt");

  // 1–2. The S and R networks (reused when present: delete models/ to retrain).
  for (const auto& [name, adv] : {std::pair<std::string, std::string>{"S", "none"}, {"R", "pgd"}}) {
    const auto model = d.path("models/" + name + "/model.pt");
    if (fs::exists(model)) {
      d.skip("train-" + name, "reusing " + model);
      continue;
    }
    d.step("train-" + name, name == "S" ? "train S (standard)" : "train R (PGD L∞, ε 0.1)",
           with({"train", o.data, "--split", "train", "--arch", "fashion-cnn", "--limit", std::to_string(z.train_limit),
                 "--epochs", std::to_string(z.epochs), "--adversarial", adv, "--eps", "0.1", "--alpha", "0.025", "--steps",
                 std::to_string(z.pgd_steps), "--seed", "1", "-o", d.path("models/" + name)}));
  }
  // 3. Accuracy on the variants of the CL set (paper-spec §2).
  std::vector<std::string> eval{"eval", S, R, o.data, "--split", "test", "--names", "S,R", "--batch-size", "200",
                                "--variant", "noise=noise:0.1", "--variant", "scrambled_2x2=scramble:2",
                                "--variant", "scrambled_4x4=scramble:4", "--variant", "edges=edges",
                                "--variant", "silhouettes=silhouette", "-o", d.path("eval")};
  if (z.eval_images) eval.insert(eval.end(), {"--ids", first_ids(d, z.eval_images)});
  d.step("eval", "accuracy on the CL set and its variants (shape bias)", with(eval));
  // 4–5. Smoothness (paper-spec §3).
  d.step("tv-filters", "filter TV and spectra", with({"tv", "--weights", S, R, "-o", d.path("tv-filters")}));
  d.step("tv", "activation TV, clean vs noisy",
         with({"tv", S, R, "--data", o.data, "--ids", first_ids(d, z.tv_images), "--noise", "0.1", "-l", "relu1,relu2,relu3",
               "-o", d.path("tv")}));
  // 6–7. Feature level (paper-spec §4): a Broden-format probe set generated here, then dissection.
  if (fs::exists(d.path("probe/index.csv")))
    d.skip("probe", "reusing " + d.path("probe"));
  else
    d.step("probe", "generate a Broden-format probe set",
           {shipped_file("make_probe.py", "scripts/make_probe.py"), "--out", d.path("probe"), "--count",
            std::to_string(z.probe_images), "--image-size", "56", "--seg-size", "28", "--seed", "1"},
           o.python);
  d.step("dissect", "network dissection",
         with({"dissect", S, R, "--probe", d.path("probe"), "--channels", "1", "--resize", "28", "--normalize", "none", "-l",
               "relu1,relu2,relu3", "--quantile", "exact", "-o", d.path("dissect")}));
  // 8. Diversity (paper-spec §5).
  d.step("diversity", "top-K inputs per unit and their diversity",
         with({"diversity", S, R, "--data", o.data, "--ids", first_ids(d, z.diversity_images), "-l", "relu2,relu3", "-k",
               std::to_string(z.top_k), "--embedding", "flatten", "--embedding-source", S, "--grids", "4", "-o",
               d.path("diversity")}));
  // 9. Robustness: PGD L∞ at several ε, examples kept for the report.
  {
    output_folder out(d.path("attack"));
    std::ostringstream csv;
    csv << "model,eps,images,clean_accuracy,robust_accuracy,mean_linf\n";
    nlohmann::json runs = nlohmann::json::array();
    const std::string ids = first_ids(d, z.attack_images);
    for (double eps : eps_list)
      for (const auto& [name, model] : {std::pair<std::string, std::string>{"S", S}, {"R", R}}) {
        const auto file = "pgd-" + name + "-eps" + number(eps) + ".h5";
        d.step("attack-" + name + "-" + number(eps), "PGD L∞ ε " + number(eps) + " on " + name,
               with({"attack", model, o.data, "--ids", ids, "--method", "pgd", "--norm", "linf", "--eps", number(eps), "--alpha",
                     number(eps / 4), "--steps", "10", "--seed", "1", "-o", out.path(file)}));
        const auto log = parse_log(open_source(out.path(file), 1)->header().provenance);
        const auto& s = log.back().at("summary");
        csv << name << "," << eps << "," << z.attack_images << "," << csv_number(s.at("clean_accuracy").get<double>()) << ","
            << csv_number(s.at("robust_accuracy").get<double>()) << ","
            << csv_number(s.at("linf_mean").get<double>()) << "\n";
        runs.push_back({{"model", name}, {"eps", eps}, {"store", file}, {"summary", s}});
      }
    out.write("robustness.csv", csv.str());
    auto r = rec;
    r["params"] = {{"runs", runs}};
    out.write("provenance.json", r.dump(2) + "\n");
    out.commit();
  }
  // 10. What was run, with which sizes: demo.json, written before the report (which shows it) and
  // again after it; only the last write, when every step succeeded, records "finished".
  auto write_record = [&] {
    rec["params"] = {{"preset", z.name},
                     {"data", o.data},
                     {"sizes", {{"train_limit", z.train_limit}, {"epochs", z.epochs}, {"pgd_steps", z.pgd_steps},
                                {"eval_images", z.eval_images}, {"tv_images", z.tv_images}, {"probe_images", z.probe_images},
                                {"diversity_images", z.diversity_images}, {"top_k", z.top_k}, {"attack_images", z.attack_images}}},
                     {"steps", d.steps()}};
    const auto tmp = d.path("demo.json.partial");
    std::ofstream f(tmp);
    f << rec.dump(2) << "\n";
    if (!f.flush()) throw io_error(quote_name(tmp) + ": cannot write");
    fs::rename(tmp, d.path("demo.json"));
  };
  write_record();
  // 11. The report.
  if (o.no_report) d.skip("report", "--no-report");
  else d.step("report", "the HTML report", {"report", o.output, "--quiet"});
  rec["finished"] = io::utc_now();
  write_record();
  if (!o.common.quiet)
    std::fprintf(stderr, "demo: done in %.0f s; open %s/report/index.html\n", d.elapsed(), o.output.c_str());
}

}  // namespace

int run_demo(std::span<char*> args) {
  demo_options o;
  CLI::App app{
      "The paper's S-vs-R study on Fashion-MNIST, end to end: trains a standard and a PGD-trained CNN (or reuses\n"
      "them), then runs every analysis (variant accuracy and shape bias, filter and activation TV, dissection on a\n"
      "generated Broden-format probe set, diversity, PGD robust accuracy) and writes the report. Each step is an\n"
      "ordinary shapebias command; demo.json lists them with their sizes and timings.\n\n"
      "Example: shapebias demo -o results && xdg-open results/report/index.html",
      "shapebias demo"};
  app.add_option("-o,--output", o.output, "Results folder")->group("Output")->capture_default_str();
  app.add_option("--data", o.data, "Fashion-MNIST IDX folder")->group("Input")->capture_default_str();
  app.add_flag("--full", o.full, "Use all the data (60,000 training images, 10 epochs, the whole test set)")->group("Sizes");
  app.add_option("--preset", o.preset, "Sizes: default (about 10 minutes on 2 cores) or tiny (a smoke test)")
      ->check(CLI::IsMember({"default", "tiny"}))->group("Sizes")->capture_default_str();
  app.add_option("--python", o.python, "Python 3 with numpy and Pillow, for the probe-set generator")->group("Input")
      ->capture_default_str();
  app.add_flag("--no-report", o.no_report, "Skip the HTML report")->group("Output");
  add_common_options(app, o.common);
  if (!parse(app, args)) return 0;
  if (fs::exists(o.output) && !fs::is_directory(o.output)) throw usage_error("-o '" + o.output + "' exists and is not a folder");
  run(o, start_record("demo", args));
  return 0;
}

}  // namespace shapebias::tools
