// SPDX-License-Identifier: MIT
#include "common/broden.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "common/csv.hpp"
#include "common/dataset.hpp"
#include "common/provenance.hpp"
#include "shapebias/core/errors.hpp"

namespace shapebias::tools {
namespace {

namespace fs = std::filesystem;

template <class T>
T parse_number(const csv_table& t, std::size_t r, std::size_t c) {
  const std::string& s = t.rows[r][c];
  T v{};
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size())
    throw io_error(t.where(r) + ": " + t.header[c] + " '" + s + "' is not a number");
  return v;
}

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
}

}  // namespace

probe_set probe_set::open(const std::string& dir, const std::vector<std::string>& wanted) {
  probe_set ps;
  ps.dir_ = dir;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw io_error(quote_name(dir) + ": not a folder (a Broden-format probe set is a folder)");
  const auto file = [&](const std::string& name) { return (fs::path(dir) / name).string(); };

  // Categories, in category.csv order, restricted to the wanted ones.
  const auto cats = read_csv(file("category.csv"));
  const auto cat_name = cats.column("name");
  std::vector<std::string> all;
  for (const auto& r : cats.rows) all.push_back(r[cat_name]);
  for (const auto& w : wanted)
    if (std::find(all.begin(), all.end(), w) == all.end()) {
      std::string has;
      for (const auto& a : all) has += (has.empty() ? "" : ", ") + a;
      throw io_error(quote_name(file("category.csv")) + ": no category '" + w + "' (it has: " + has + ")");
    }
  for (const auto& a : all)
    if (wanted.empty() || std::find(wanted.begin(), wanted.end(), a) != wanted.end()) ps.categories_.push_back(a);
  if (ps.categories_.empty()) throw io_error(quote_name(file("category.csv")) + ": no categories");

  // Labels: one global numbering; label 0 (unlabelled) is not listed.
  const auto labels = read_csv(file("label.csv"));
  const auto num = labels.column("number"), name = labels.column("name");
  std::int64_t top = 0;
  for (std::size_t r = 0; r < labels.rows.size(); ++r) {
    const auto n = parse_number<std::int64_t>(labels, r, num);
    if (n < 1 || n > 1 << 20) throw io_error(labels.where(r) + ": label number " + std::to_string(n) + " is not in [1, 2^20]");
    top = std::max(top, n);
  }
  if (top == 0) throw io_error(quote_name(labels.path) + ": no labels");
  ps.names_.assign(static_cast<std::size_t>(top) + 1, "");
  ps.names_[0] = "-";
  for (std::size_t r = 0; r < labels.rows.size(); ++r) {
    const auto n = static_cast<std::size_t>(parse_number<std::int64_t>(labels, r, num));
    if (!ps.names_[n].empty()) throw io_error(labels.where(r) + ": label number " + std::to_string(n) + " is listed twice");
    ps.names_[n] = labels.rows[r][name];
  }
  const std::size_t L = ps.names_.size();

  // Primary category: the largest coverage among the selected categories; ties go to the later one.
  std::vector<double> best(L, -1.0);
  ps.primary_.assign(L, 0);
  ps.files_ = {{"index.csv", sha256_file(file("index.csv"))}, {"category.csv", sha256_file(cats.path)},
               {"label.csv", sha256_file(labels.path)}};
  for (std::size_t ic = 0; ic < ps.categories_.size(); ++ic) {
    const std::string cname = "c_" + ps.categories_[ic] + ".csv";
    const auto c = read_csv(file(cname));
    ps.files_[cname] = sha256_file(c.path);
    const auto code = c.column("code"), number = c.column("number"), cov = c.column("coverage");
    std::vector<double> coverage(L, 0.0);
    for (std::size_t r = 0; r < c.rows.size(); ++r) {
      const auto n = parse_number<std::int64_t>(c, r, number);
      if (n < 0 || static_cast<std::size_t>(n) >= L)
        throw io_error(c.where(r) + ": label number " + std::to_string(n) + " is not in label.csv");
      if (parse_number<std::int64_t>(c, r, code) != 0 && n != 0)
        coverage[static_cast<std::size_t>(n)] = parse_number<double>(c, r, cov);
    }
    for (std::size_t l = 1; l < L; ++l)
      if (coverage[l] >= best[l]) {
        best[l] = coverage[l];
        ps.primary_[l] = static_cast<std::int32_t>(ic);
      }
  }

  // The images.
  const auto index = read_csv(file("index.csv"));
  const auto img = index.column("image"), sh = index.column("sh"), sw = index.column("sw");
  for (const char* meta : {"split", "ih", "iw"}) index.column(meta);
  std::vector<std::size_t> cat_cols;
  for (const auto& cname : ps.categories_) {
    const auto it = std::find(index.header.begin(), index.header.end(), cname);
    if (it != index.header.end()) cat_cols.push_back(static_cast<std::size_t>(it - index.header.begin()));
  }
  for (std::size_t r = 0; r < index.rows.size(); ++r) {
    row w;
    w.image = index.rows[r][img];
    if (w.image.empty()) throw io_error(index.where(r) + ": empty image name");
    const auto h = parse_number<std::int64_t>(index, r, sh), wd = parse_number<std::int64_t>(index, r, sw);
    if (h < 1 || wd < 1 || h > 65535 || wd > 65535)
      throw io_error(index.where(r) + ": segmentation size " + std::to_string(h) + "x" + std::to_string(wd) + " is not valid");
    w.sh = static_cast<std::size_t>(h);
    w.sw = static_cast<std::size_t>(wd);
    for (auto c : cat_cols) {
      const std::string& cell = index.rows[r][c];
      std::size_t b = 0;
      while (b <= cell.size()) {
        const auto e = std::min(cell.find(';', b), cell.size());
        const std::string tok = cell.substr(b, e - b);
        b = e + 1;
        if (tok.empty()) continue;
        if (!all_digits(tok)) {
          w.items.push_back({tok, 0});
          continue;
        }
        std::int64_t v = 0;
        std::from_chars(tok.data(), tok.data() + tok.size(), v);
        if (v < 1 || static_cast<std::size_t>(v) >= L)
          throw io_error(index.where(r) + ": " + index.header[c] + " label " + tok + " is not in label.csv (1.." +
                         std::to_string(L - 1) + ")");
        w.items.push_back({"", static_cast<std::int32_t>(v)});
      }
    }
    ps.rows_.push_back(std::move(w));
  }
  if (ps.rows_.empty()) throw io_error(quote_name(index.path) + ": no images");
  return ps;
}

bool probe_set::has_labels(std::size_t i) const { return !rows_.at(i).items.empty(); }

std::string probe_set::image_path(std::size_t i) const { return (fs::path(dir_) / "images" / rows_.at(i).image).string(); }

probe_labels probe_set::labels_of(std::size_t i) const {
  const row& w = rows_.at(i);
  probe_labels out;
  out.sh = w.sh;
  out.sw = w.sw;
  for (const auto& it : w.items) {
    if (it.png.empty()) {
      out.image_labels.push_back(it.label);
      continue;
    }
    const std::string p = (fs::path(dir_) / "images" / it.png).string();
    const image seg = decode_image(p);
    if (static_cast<std::size_t>(seg.height) != w.sh || static_cast<std::size_t>(seg.width) != w.sw)
      throw io_error(quote_name(p) + ": segmentation is " + std::to_string(seg.height) + "x" + std::to_string(seg.width) +
                     ", index.csv says " + std::to_string(w.sh) + "x" + std::to_string(w.sw));
    std::vector<std::int32_t> layer(w.sh * w.sw);
    for (std::size_t q = 0; q < layer.size(); ++q) {
      const std::int32_t v = seg.pixels[3 * q] + 256 * seg.pixels[3 * q + 1];
      if (static_cast<std::size_t>(v) >= labels())
        throw io_error(quote_name(p) + ": pixel (" + std::to_string(q % w.sw) + ", " + std::to_string(q / w.sw) +
                       ") has label " + std::to_string(v) + ", not in label.csv (0.." + std::to_string(labels() - 1) + ")");
      layer[q] = v;
    }
    out.layers.push_back(std::move(layer));
  }
  return out;
}

nlohmann::json probe_set::describe() const {
  std::size_t used = 0;
  for (std::size_t i = 0; i < rows_.size(); ++i) used += has_labels(i);
  return {{"format", "broden"}, {"path", dir_},          {"images", rows_.size()}, {"images_with_labels", used},
          {"labels", labels()}, {"categories", categories_}, {"sha256", files_}};
}

}  // namespace shapebias::tools
