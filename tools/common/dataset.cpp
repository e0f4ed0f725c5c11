// SPDX-License-Identifier: MIT
#include "common/dataset.hpp"

#include <jpeglib.h>
#include <png.h>
#include <zlib.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <tuple>
#include <unordered_set>

#include "common/broden.hpp"
#include "common/cli.hpp"
#include "common/provenance.hpp"
#include "shapebias/core/errors.hpp"

namespace shapebias::tools {
namespace fs = std::filesystem;
namespace {

// ---- decoding ------------------------------------------------------------------------------------

struct jpeg_error : jpeg_error_mgr {
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = "";
};

// libjpeg calls this for the first warning (and for errors, before error_exit): keep its text
// for the exception instead of printing it.
void jpeg_keep_message(j_common_ptr c) {
  auto* e = reinterpret_cast<jpeg_error*>(c->err);
  if (e->message[0] == '\0') (*c->err->format_message)(c, e->message);
}

void jpeg_fail(j_common_ptr c) {
  auto* e = reinterpret_cast<jpeg_error*>(c->err);
  e->message[0] = '\0';
  jpeg_keep_message(c);
  std::longjmp(e->jump, 1);
}

image decode_jpeg(const std::string& path, std::FILE* f) {
  jpeg_decompress_struct d{};
  jpeg_error err{};
  d.err = jpeg_std_error(&err);
  err.error_exit = jpeg_fail;
  err.output_message = jpeg_keep_message;
  image img;
  // Nothing with a destructor may be created between setjmp and the last libjpeg call.
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&d);
    throw io_error(quote_name(path) + ": image does not decode as JPEG: " + err.message);
  }
  jpeg_create_decompress(&d);
  jpeg_stdio_src(&d, f);
  jpeg_read_header(&d, TRUE);
  if (d.jpeg_color_space == JCS_CMYK || d.jpeg_color_space == JCS_YCCK) {
    jpeg_destroy_decompress(&d);
    throw io_error(quote_name(path) + ": CMYK JPEG images are not supported");
  }
  d.out_color_space = JCS_RGB;
  jpeg_start_decompress(&d);
  img.height = static_cast<int>(d.output_height);
  img.width = static_cast<int>(d.output_width);
  img.channels = 3;
  img.pixels.resize(static_cast<std::size_t>(img.height) * static_cast<std::size_t>(img.width) * 3);
  while (d.output_scanline < d.output_height) {
    JSAMPROW row = img.pixels.data() + static_cast<std::size_t>(d.output_scanline) * img.width * 3;
    jpeg_read_scanlines(&d, &row, 1);
  }
  jpeg_finish_decompress(&d);
  // libjpeg only warns about corrupt or truncated data and fills in grey; PIL refuses such files.
  if (err.num_warnings > 0) {
    jpeg_destroy_decompress(&d);
    throw io_error(quote_name(path) + ": image does not decode as JPEG: " + err.message);
  }
  jpeg_destroy_decompress(&d);
  return img;
}

/// Sizes an RGB image and returns its pixel buffer (kept out of line: see decode_png).
[[gnu::noinline]] unsigned char* allocate(image& img, int height, int width) {
  img.height = height;
  img.width = width;
  img.channels = 3;
  img.pixels.resize(static_cast<std::size_t>(height) * static_cast<std::size_t>(width) * 3);
  return img.pixels.data();
}

struct png_failure {
  std::jmp_buf jump;
  std::string message;
};

void png_fail(png_structp p, png_const_charp msg) {
  auto* f = static_cast<png_failure*>(png_get_error_ptr(p));
  f->message = msg;  // std::string assignment happens before the jump; nothing is left half-built
  std::longjmp(f->jump, 1);
}

void png_ignore_warning(png_structp, png_const_charp) {}

/// Decodes as PIL's Image.open(...).convert("RGB"): palette and grey expanded, alpha and tRNS
/// dropped (not composited), 16-bit samples cut to their high byte, no gamma correction.
image decode_png(const std::string& path, std::FILE* f) {
  png_failure fail;
  png_structp p = png_create_read_struct(PNG_LIBPNG_VER_STRING, &fail, png_fail, png_ignore_warning);
  png_infop info = p ? png_create_info_struct(p) : nullptr;
  if (!info) {
    png_destroy_read_struct(&p, nullptr, nullptr);
    throw std::bad_alloc();
  }
  image img;
  if (setjmp(fail.jump)) {
    png_destroy_read_struct(&p, &info, nullptr);
    throw io_error(quote_name(path) + ": image does not decode as PNG: " + fail.message);
  }
  png_init_io(p, f);
  png_read_info(p, info);
  const int color = png_get_color_type(p, info);
  png_set_strip_16(p);
  png_set_strip_alpha(p);
  png_set_packing(p);
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(p);
  if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) {
    png_set_expand_gray_1_2_4_to_8(p);
    png_set_gray_to_rgb(p);
  }
  const int passes = png_set_interlace_handling(p);
  png_read_update_info(p, info);
  const png_uint_32 w = png_get_image_width(p, info), h = png_get_image_height(p, info);
  if (png_get_rowbytes(p, info) != std::size_t{w} * 3) png_error(p, "unexpected row layout after conversion to RGB");
  // No C++ object is made or resized in this frame after setjmp (longjmp would skip it).
  unsigned char* px = allocate(img, static_cast<int>(h), static_cast<int>(w));
  for (int pass = 0; pass < passes; ++pass)
    for (png_uint_32 y = 0; y < h; ++y) png_read_row(p, px + std::size_t{y} * w * 3, nullptr);
  png_read_end(p, nullptr);
  png_destroy_read_struct(&p, &info, nullptr);
  return img;
}

// ---- IDX -----------------------------------------------------------------------------------------

std::uint32_t be32(const unsigned char* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}

/// Reads a whole IDX file (gzip or plain) and checks its magic number and dimensions.
std::vector<unsigned char> read_idx(const std::string& path, std::uint32_t magic, std::vector<std::uint32_t>& dims) {
  gzFile g = gzopen(path.c_str(), "rb");
  if (!g) throw io_error(quote_name(path) + ": cannot open: " + std::strerror(errno));
  std::vector<unsigned char> data;
  unsigned char buf[1 << 16];
  int n;
  while ((n = gzread(g, buf, sizeof buf)) > 0) data.insert(data.end(), buf, buf + n);
  int errnum = 0;
  const char* msg = gzerror(g, &errnum);
  const std::string why = errnum != Z_OK && errnum != Z_STREAM_END ? msg : "";
  gzclose(g);
  if (n < 0 || !why.empty()) throw io_error(quote_name(path) + ": corrupt gzip data: " + why);
  if (data.size() < 4 || be32(data.data()) != magic)
    throw io_error(quote_name(path) + ": not an IDX file of the expected kind (magic number)");
  const std::size_t ndim = magic & 0xff;
  if (data.size() < 4 + 4 * ndim) throw io_error(quote_name(path) + ": truncated IDX header");
  std::size_t count = 1;
  dims.clear();
  for (std::size_t i = 0; i < ndim; ++i) {
    dims.push_back(be32(data.data() + 4 + 4 * i));
    count *= dims.back();
  }
  if (data.size() != 4 + 4 * ndim + count)
    throw io_error(quote_name(path) + ": IDX size mismatch: header says " + std::to_string(count) + " bytes of data, file has " +
                   std::to_string(data.size() - 4 - 4 * ndim));
  data.erase(data.begin(), data.begin() + static_cast<std::ptrdiff_t>(4 + 4 * ndim));
  return data;
}

std::string find_idx(const fs::path& dir, const std::string& stem) {
  for (const char* ext : {".gz", ""}) {
    const auto p = dir / (stem + ext);
    if (fs::exists(p)) return p.string();
  }
  throw io_error(quote_name(dir.string()) + ": no IDX file " + stem + "[.gz] in this folder");
}

class idx_dataset : public dataset {
 public:
  idx_dataset(const std::string& dir, const std::string& split) : dir_(dir), split_(split) {
    const std::string prefix = split == "train" ? "train" : "t10k";
    images_path_ = find_idx(dir, prefix + "-images-idx3-ubyte");
    labels_path_ = find_idx(dir, prefix + "-labels-idx1-ubyte");
    std::vector<std::uint32_t> idims, ldims;
    pixels_ = read_idx(images_path_, 0x00000803, idims);
    labels_ = read_idx(labels_path_, 0x00000801, ldims);
    if (idims[0] != ldims[0])
      throw io_error(quote_name(dir) + ": " + std::to_string(idims[0]) + " images but " + std::to_string(ldims[0]) + " labels");
    n_ = idims[0];
    h_ = static_cast<int>(idims[1]);
    w_ = static_cast<int>(idims[2]);
    for (std::size_t i = 0; i < n_; ++i)
      if (labels_[i] >= 10)
        throw io_error(quote_name(labels_path_) + ": label " + std::to_string(labels_[i]) + " of image " + std::to_string(i) +
                       " is out of range [0, 10)");
  }
  std::size_t size() const override { return n_; }
  std::int64_t label(std::size_t i) const override { return labels_.at(i); }
  std::size_t num_classes() const override { return 10; }
  int native_channels() const override { return 1; }
  std::string item_name(std::size_t i) const override {
    return "IDX image " + std::to_string(i) + " of " + quote_name(images_path_);
  }
  image load(std::size_t i) const override {
    image img{h_, w_, 1, {}};
    const auto px = static_cast<std::size_t>(h_ * w_);
    img.pixels.assign(pixels_.begin() + static_cast<std::ptrdiff_t>(i * px),
                      pixels_.begin() + static_cast<std::ptrdiff_t>((i + 1) * px));
    return img;
  }
  nlohmann::json describe() const override {
    return {{"format", "idx"}, {"path", dir_}, {"split", split_}, {"size", n_}, {"classes", 10},
            {"files", {{{"path", images_path_}, {"sha256", sha256_file(images_path_)}},
                       {{"path", labels_path_}, {"sha256", sha256_file(labels_path_)}}}}};
  }

 private:
  std::string dir_, split_, images_path_, labels_path_;
  std::vector<unsigned char> pixels_, labels_;
  std::size_t n_ = 0;
  int h_ = 0, w_ = 0;
};

// ---- image folders and list files ----------------------------------------------------------------


class file_dataset : public dataset {
 public:
  std::size_t size() const override { return items_.size(); }
  std::int64_t label(std::size_t i) const override { return items_.at(i).second; }
  std::size_t num_classes() const override { return classes_.size(); }
  int native_channels() const override { return 3; }
  std::string item_name(std::size_t i) const override { return quote_name(items_.at(i).first); }
  std::string item_path(std::size_t i) const override { return items_.at(i).first; }
  image load(std::size_t i) const override { return decode_image(items_.at(i).first); }
  nlohmann::json describe() const override {
    std::string listing;
    for (const auto& [p, l] : items_) listing += p + "\t" + std::to_string(l) + "\n";
    nlohmann::json j{{"format", format_}, {"path", path_}, {"size", items_.size()},
                     {"listing_sha256", sha256_text(listing)}};
    if (!classes_.empty()) j["classes"] = classes_;
    return j;
  }

 protected:
  std::string format_, path_;
  std::vector<std::pair<std::string, std::int64_t>> items_;
  std::vector<std::string> classes_;
};

class folder_dataset : public file_dataset {
 public:
  explicit folder_dataset(const std::string& root) {
    format_ = "folder";
    path_ = root;
    for (const auto& e : fs::directory_iterator(root))
      if (e.is_directory()) classes_.push_back(e.path().filename().string());
    std::sort(classes_.begin(), classes_.end());
    if (classes_.empty()) throw io_error(quote_name(root) + ": an image folder needs one subfolder per class; found none");
    for (std::size_t c = 0; c < classes_.size(); ++c) {
      // As torchvision: sorted(os.walk(class_dir, followlinks=True)), then sorted file names.
      std::map<std::string, std::vector<std::string>> by_dir;
      const fs::path cdir = fs::path(root) / classes_[c];
      by_dir[cdir.string()];
      for (const auto& e : fs::recursive_directory_iterator(cdir, fs::directory_options::follow_directory_symlink))
        if (e.is_regular_file() && torchvision_image_name(e.path()))
          by_dir[e.path().parent_path().string()].push_back(e.path().filename().string());
      for (auto& [d, names] : by_dir) {
        std::sort(names.begin(), names.end());
        for (const auto& n : names) items_.emplace_back((fs::path(d) / n).string(), static_cast<std::int64_t>(c));
      }
    }
  }
};

class list_dataset : public file_dataset {
 public:
  explicit list_dataset(const std::string& list) {
    format_ = "list";
    path_ = list;
    std::ifstream in(list);
    if (!in) throw io_error(quote_name(list) + ": cannot open: " + std::strerror(errno));
    const fs::path base = fs::path(list).parent_path();
    std::string line;
    std::size_t lineno = 0;
    while (std::getline(in, line)) {
      ++lineno;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.find_first_not_of(" \t") == std::string::npos || line[line.find_first_not_of(" \t")] == '#') continue;
      const auto cut = line.find_last_of(" \t");
      std::int64_t label = -1;
      std::size_t used = 0;
      std::string p;
      try {
        if (cut == std::string::npos) throw std::invalid_argument("no label");
        const std::string tok = line.substr(cut + 1);
        label = std::stoll(tok, &used);
        if (used != tok.size()) throw std::invalid_argument("bad label");
        p = line.substr(0, line.find_last_not_of(" \t", cut) + 1);
      } catch (const std::exception&) {
        throw io_error(quote_name(list) + ": line " + std::to_string(lineno) + ": expected 'path label', found '" + line + "'");
      }
      if (label < 0)
        throw io_error(quote_name(list) + ": line " + std::to_string(lineno) + ": label " + std::to_string(label) +
                       " is out of range (labels are class indices from 0)");
      const fs::path fp(p);
      items_.emplace_back((fp.is_absolute() ? fp : base / fp).string(), label);
    }
  }
};

}  // namespace

bool torchvision_image_name(const fs::path& p) {
  // torchvision.datasets.folder.IMG_EXTENSIONS; files with other names are not part of the set.
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (const char* x : {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"})
    if (e == x) return true;
  return false;
}

void write_png(const std::string& path, const image& img) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw io_error(quote_name(path) + ": cannot write: " + std::strerror(errno));
  png_failure fail;
  png_structp p = png_create_write_struct(PNG_LIBPNG_VER_STRING, &fail, png_fail, png_ignore_warning);
  png_infop info = p ? png_create_info_struct(p) : nullptr;
  volatile bool ok = p && info;  // volatile: read after a longjmp
  if (ok && setjmp(fail.jump) == 0) {
    png_init_io(p, f);
    png_set_IHDR(p, info, static_cast<png_uint_32>(img.width), static_cast<png_uint_32>(img.height), 8,
                 img.channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(p, info);
    const auto stride = static_cast<std::size_t>(img.width) * static_cast<std::size_t>(img.channels);
    for (int y = 0; y < img.height; ++y)
      png_write_row(p, const_cast<png_bytep>(img.pixels.data() + static_cast<std::size_t>(y) * stride));
    png_write_end(p, nullptr);
  } else {
    ok = false;
  }
  png_destroy_write_struct(p ? &p : nullptr, info ? &info : nullptr);
  if (std::fclose(f) != 0) ok = false;
  if (!ok) throw io_error(quote_name(path) + ": cannot write PNG" + (fail.message.empty() ? "" : ": " + fail.message));
}

image decode_image(const std::string& path) {
  std::unique_ptr<std::FILE, decltype(&std::fclose)> f(std::fopen(path.c_str(), "rb"), std::fclose);
  if (!f) throw io_error(quote_name(path) + ": cannot open image: " + std::strerror(errno));
  unsigned char magic[8] = {};
  const std::size_t n = std::fread(magic, 1, sizeof magic, f.get());
  std::rewind(f.get());
  if (n >= 3 && magic[0] == 0xff && magic[1] == 0xd8 && magic[2] == 0xff) return decode_jpeg(path, f.get());
  if (n == 8 && png_sig_cmp(magic, 0, 8) == 0) return decode_png(path, f.get());
  throw io_error(quote_name(path) + ": image does not decode: not a JPEG or PNG file" + (n == 0 ? " (empty)" : ""));
}

image convert_channels(image img, int channels) {
  if (channels == 0 || channels == img.channels) return img;
  image out{img.height, img.width, channels, {}};
  const std::size_t n = static_cast<std::size_t>(img.height) * static_cast<std::size_t>(img.width);
  out.pixels.resize(n * static_cast<std::size_t>(channels));
  if (img.channels == 1 && channels == 3) {
    for (std::size_t i = 0; i < n; ++i) out.pixels[3 * i] = out.pixels[3 * i + 1] = out.pixels[3 * i + 2] = img.pixels[i];
  } else if (img.channels == 3 && channels == 1) {
    for (std::size_t i = 0; i < n; ++i) {
      const unsigned r = img.pixels[3 * i], g = img.pixels[3 * i + 1], b = img.pixels[3 * i + 2];
      out.pixels[i] = static_cast<std::uint8_t>((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16);
    }
  } else {
    throw std::invalid_argument("cannot convert " + std::to_string(img.channels) + " channels to " + std::to_string(channels));
  }
  return out;
}

nlohmann::json preprocessing::to_json() const {
  return {{"channels", channels}, {"resize_shorter", resize}, {"center_crop", crop}, {"scale", "uint8/255"},
          {"resize_method", "bilinear, antialiased, rounded to uint8 (torchvision on PIL images)"},
          {"normalize", normalize}, {"mean", mean}, {"std", std},
          {"noise", noise > 0 ? nlohmann::json{{"sigma", noise}, {"seed", noise_seed}, {"clip", noise_clip},
                                               {"scheme", "x + sigma * N(0,1) in [0,1] space before normalisation; "
                                                          "generator seeded by splitmix64(seed, input id, 'noise')"}}
                              : nlohmann::json(nullptr)},
          {"transform", transform.what == transform_spec::kind::none
                            ? nlohmann::json(nullptr)
                            : nlohmann::json{{"spec", transform.to_json()}, {"seed", transform_seed}}}};
}

std::vector<double> number_list(const std::string& s, std::string& bad) {
  std::vector<double> v;
  std::stringstream ss(s);
  std::string tok;
  while (std::getline(ss, tok, ',')) {
    std::size_t used = 0;
    double x = 0;
    try {
      x = std::stod(tok, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != tok.size()) {
      bad = tok;
      return v;
    }
    v.push_back(x);
  }
  return v;
}

transform_spec transform_spec::parse(const std::string& s) {
  transform_spec t;
  const auto colon = s.find(':');
  const std::string name = s.substr(0, colon), arg = colon == std::string::npos ? "" : s.substr(colon + 1);
  auto bad = [&](const std::string& why) { return usage_error("--transform '" + s + "': " + why); };
  auto numbers = [&](std::size_t n) {
    std::string tok;
    const auto v = number_list(arg, tok);
    if (!tok.empty()) throw bad("'" + tok + "' is not a number");
    if (v.size() != n) throw bad("expected " + std::to_string(n) + " number(s) after ':'");
    return v;
  };
  if (name == "none" && arg.empty()) return t;
  if (name == "gray" && arg.empty()) {
    t.what = kind::gray;
  } else if (name == "scramble") {
    const auto v = numbers(1);
    if (v[0] < 1 || v[0] != std::floor(v[0]) || v[0] > 64) throw bad("the grid must be a whole number from 1 to 64");
    t.what = kind::scramble;
    t.grid = static_cast<int>(v[0]);
  } else if (name == "edges") {
    t.what = kind::edges;
    if (!arg.empty()) {
      const auto v = numbers(3);
      t.sigma = v[0], t.low = v[1], t.high = v[2];
    }
    if (!(t.sigma >= 0) || !(t.low >= 0) || !(t.high >= t.low)) throw bad("needs sigma >= 0 and 0 <= low <= high");
  } else if (name == "silhouette") {
    t.what = kind::silhouette;
    if (arg.rfind("masks=", 0) == 0) {
      t.masks = arg.substr(6);
      if (t.masks.empty()) throw bad("masks= needs a folder");
    } else if (!arg.empty()) {
      t.threshold = numbers(1)[0];
      if (!(t.threshold >= 0 && t.threshold < 1)) throw bad("the threshold must be in [0, 1)");
    }
  } else {
    throw bad("not one of none, gray, scramble:G, edges[:SIGMA,LOW,HIGH], silhouette[:THRESHOLD|:masks=DIR]");
  }
  return t;
}

nlohmann::json transform_spec::to_json() const {
  switch (what) {
    case kind::gray: return {{"kind", "gray"}, {"luma", "ITU-R 601-2 (0.299, 0.587, 0.114), as PIL's L"}};
    case kind::scramble:
      return {{"kind", "scramble"}, {"grid", grid}, {"scheme", "uniform permutation of grid x grid patches per input id"}};
    case kind::edges:
      return {{"kind", "edges"}, {"sigma", sigma}, {"low", low}, {"high", high},
              {"method", "Canny (OpenCV) on the [0,1] grayscale (0.2125, 0.7154, 0.0721, as skimage) after a Gaussian "
                         "of sigma; L2 Sobel magnitude; white edges on black"}};
    case kind::silhouette:
      return masks.empty() ? nlohmann::json{{"kind", "silhouette"}, {"threshold", threshold},
                                            {"method", "grayscale > threshold, holes filled; white object on black"}}
                           : nlohmann::json{{"kind", "silhouette"}, {"masks", masks},
                                            {"method", "mask PNG > 0 resized and cropped as the image; white object on black"}};
    default: return "none";
  }
}

nlohmann::json describe_id_list(const std::string& path, const std::vector<std::uint64_t>& ids) {
  if (path.empty()) return nullptr;
  std::string text;
  for (auto v : ids) text += std::to_string(v) + "\n";
  return {{"file", path}, {"ids", ids.size()}, {"sha256", sha256_text(text)}};
}

std::vector<std::uint64_t> read_id_list(const std::string& path, std::size_t size) {
  std::ifstream in(path);
  if (!in) throw io_error(quote_name(path) + ": cannot open id list: " + std::strerror(errno));
  std::vector<std::uint64_t> ids;
  std::unordered_set<std::uint64_t> seen;
  std::string line;
  for (std::size_t no = 1; std::getline(in, line); ++no) {
    std::istringstream ss(line.substr(0, line.find('#')));
    std::string tok;
    while (ss >> tok) {
      std::size_t used = 0;
      unsigned long long v = 0;
      try {
        if (tok[0] != '-') v = std::stoull(tok, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      const std::string where = quote_name(path) + " line " + std::to_string(no) + ": ";
      if (used == 0 || used != tok.size()) throw io_error(where + "'" + tok + "' is not an input id");
      if (v >= size)
        throw io_error(where + "id " + tok + " is out of range for a data set of " + std::to_string(size) + " inputs");
      if (!seen.insert(v).second) throw io_error(where + "id " + tok + " is listed twice");
      ids.push_back(v);
    }
  }
  if (ids.empty()) throw io_error(quote_name(path) + ": the id list is empty");
  return ids;
}

shard shard::parse(const std::string& text) {
  if (text.empty()) return {};
  const auto slash = text.find('/');
  shard s;
  auto number = [&](const std::string& t, std::uint64_t& v) {
    const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
    return !t.empty() && ec == std::errc() && end == t.data() + t.size();
  };
  if (slash == std::string::npos || !number(text.substr(0, slash), s.index) || !number(text.substr(slash + 1), s.count) ||
      s.count == 0 || s.index >= s.count)
    throw usage_error("--shard '" + text + "': expected K/N with 0 <= K < N (shard K of N, counted from 0)");
  return s;
}

nlohmann::json shard::to_json() const {
  if (whole()) return nullptr;
  return {{"index", index}, {"count", count}, {"rule", "input id mod count = index"}};
}

input_selection select_inputs(const data_options& d, std::size_t size, std::uint64_t limit) {
  input_selection s;
  if (d.ids.empty()) {
    s.ids.resize(limit ? std::min<std::uint64_t>(limit, size) : size);
    for (std::size_t i = 0; i < s.ids.size(); ++i) s.ids[i] = i;
  } else {
    s.ids = read_id_list(d.ids, size);
    s.id_list = describe_id_list(d.ids, s.ids);
    if (limit && limit < s.ids.size()) s.ids.resize(limit);
  }
  const auto sh = shard::parse(d.shard);
  s.shard = sh.to_json();
  if (!sh.whole()) {
    std::erase_if(s.ids, [&](std::uint64_t id) { return !sh.contains(static_cast<std::int64_t>(id)); });
    if (s.ids.empty())
      throw io_error(quote_name(d.path) + ": shard " + sh.to_string() + " holds none of the selected inputs (ids mod " +
                     std::to_string(sh.count) + " = " + std::to_string(sh.index) + "); use fewer shards");
  }
  return s;
}

std::pair<int, int> resized_size(int h, int w, int size) {
  // torchvision.transforms.functional._compute_resized_output_size (int size, no max_size).
  const bool w_short = w <= h;
  const int s = w_short ? w : h, l = w_short ? h : w;
  const int new_long = static_cast<int>(static_cast<double>(size) * l / s);
  return w_short ? std::pair{new_long, size} : std::pair{size, new_long};
}

view_geometry preprocessed_view(int height, int width, const preprocessing& p) {
  view_geometry g;
  std::tie(g.resized_height, g.resized_width) = p.resize > 0 ? resized_size(height, width, p.resize) : std::pair{height, width};
  g.scale_y = static_cast<double>(height) / g.resized_height;
  g.scale_x = static_cast<double>(width) / g.resized_width;
  auto corner = [c = p.crop](int side) {
    // torchvision pads a shorter side with (c - side) // 2 zeros before; a longer one is cropped at
    // int(round((side - c) / 2)), Python's round half to even.
    return c > side ? -((c - side) / 2) : static_cast<int>(std::nearbyint(static_cast<double>(side - c) / 2.0));
  };
  g.height = p.crop > 0 ? p.crop : g.resized_height;
  g.width = p.crop > 0 ? p.crop : g.resized_width;
  if (p.crop > 0) g.top = corner(g.resized_height), g.left = corner(g.resized_width);
  return g;
}

preprocessing resolve_preprocessing(const data_options& o, int native_channels) {
  preprocessing p;
  p.channels = o.channels ? o.channels : native_channels;
  p.resize = o.resize;
  p.crop = o.crop;
  p.normalize = o.normalize;
  p.noise = o.noise;
  p.noise_seed = o.noise_seed;
  p.noise_clip = o.noise_clip;
  p.transform = transform_spec::parse(o.transform);
  p.transform_seed = o.transform_seed;
  p.root = o.path;
  const auto c = static_cast<std::size_t>(p.channels);
  auto parse_list = [&](const std::string& s) {
    std::string tok;
    const auto d = number_list(s, tok);
    if (!tok.empty()) throw usage_error("--normalize: '" + tok + "' is not a number (expected none, imagenet, netdissect or MEAN/STD)");
    std::vector<float> v(d.begin(), d.end());
    if (v.size() == 1) v.assign(c, v[0]);
    if (v.size() != c)
      throw usage_error("--normalize: " + std::to_string(v.size()) + " values for " + std::to_string(c) + " channels");
    return v;
  };
  if (o.normalize == "none") {
    p.mean.assign(c, 0.f);
    p.std.assign(c, 1.f);
  } else if (o.normalize == "netdissect") {
    // NetDissect-Lite's Caffe-style input: BGR mean (109.5388, 118.6897, 124.6901) subtracted from
    // 0..255 pixels, divided by 255·0.224; the same as this per-channel MEAN/STD on [0,1] RGB.
    if (c != 3) throw usage_error("--normalize netdissect needs 3 channels (add --channels 3)");
    p.mean = {124.6901f / 255.f, 118.6897f / 255.f, 109.5388f / 255.f};
    p.std = {0.224f, 0.224f, 0.224f};
  } else if (o.normalize == "imagenet") {
    if (c != 3) throw usage_error("--normalize imagenet needs 3 channels (add --channels 3)");
    p.mean = {0.485f, 0.456f, 0.406f};
    p.std = {0.229f, 0.224f, 0.225f};
  } else {
    const auto slash = o.normalize.find('/');
    if (slash == std::string::npos) throw usage_error("--normalize: expected none, imagenet, netdissect or MEAN/STD, got '" + o.normalize + "'");
    p.mean = parse_list(o.normalize.substr(0, slash));
    p.std = parse_list(o.normalize.substr(slash + 1));
    for (float s : p.std)
      if (!(s > 0)) throw usage_error("--normalize: standard deviations must be positive");
  }
  return p;
}

/// A Broden-format probe set (common/broden.hpp): every image of index.csv, in its order, label 0.
class broden_dataset : public file_dataset {
 public:
  explicit broden_dataset(const std::string& dir) {
    format_ = "broden";
    path_ = dir;
    const auto ps = probe_set::open(dir);
    for (std::size_t i = 0; i < ps.size(); ++i) items_.emplace_back(ps.image_path(i), 0);
  }
};

std::unique_ptr<dataset> dataset::open(const data_options& o) {
  const std::string& p = o.path;
  std::error_code ec;
  if (!fs::exists(p, ec)) throw io_error(quote_name(p) + ": no such file or folder");
  std::string format = o.format;
  if (format == "auto") {
    if (fs::is_directory(p))
      format = fs::exists(fs::path(p) / "t10k-images-idx3-ubyte.gz") || fs::exists(fs::path(p) / "t10k-images-idx3-ubyte") ||
                       fs::exists(fs::path(p) / "train-images-idx3-ubyte.gz") || fs::exists(fs::path(p) / "train-images-idx3-ubyte")
                   ? "idx"
               : fs::exists(fs::path(p) / "index.csv") && fs::exists(fs::path(p) / "category.csv") ? "broden"
                                                                                                : "folder";
    else
      format = "list";
  }
  std::unique_ptr<dataset> d;
  if (format == "idx") d = std::make_unique<idx_dataset>(p, o.split);
  else if (format == "folder") d = std::make_unique<folder_dataset>(p);
  else if (format == "broden") d = std::make_unique<broden_dataset>(p);
  else d = std::make_unique<list_dataset>(p);
  if (d->size() == 0) throw io_error(quote_name(p) + ": the data set has no images");
  return d;
}

}  // namespace shapebias::tools
