// SPDX-License-Identifier: MIT
// Tests for tools/common/dataset.hpp: IDX, image folders, list files, decoding and bad input.
#include "common/dataset.hpp"

#include <jpeglib.h>
#include <png.h>
#include <zlib.h>

#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "../tmpdir.hpp"
#include "common/cli.hpp"
#include "shapebias/core/errors.hpp"

using namespace shapebias::tools;
namespace fs = std::filesystem;

namespace {

/// A width × height RGB test pattern: pixel (y, x) = (x*10, y*10, 200).
std::vector<std::uint8_t> pattern(int w, int h) {
  std::vector<std::uint8_t> p(static_cast<std::size_t>(w * h * 3));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const auto i = static_cast<std::size_t>((y * w + x) * 3);
      p[i] = static_cast<std::uint8_t>(x * 10);
      p[i + 1] = static_cast<std::uint8_t>(y * 10);
      p[i + 2] = 200;
    }
  return p;
}

void write_png(const std::string& path, int w, int h) {
  png_image img{};
  img.version = PNG_IMAGE_VERSION;
  img.width = static_cast<png_uint_32>(w);
  img.height = static_cast<png_uint_32>(h);
  img.format = PNG_FORMAT_RGB;
  const auto p = pattern(w, h);
  REQUIRE(png_image_write_to_file(&img, path.c_str(), 0, p.data(), 0, nullptr));
}

void write_jpeg(const std::string& path, int w, int h) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  jpeg_compress_struct c{};
  jpeg_error_mgr err{};
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  jpeg_stdio_dest(&c, f);
  c.image_width = static_cast<JDIMENSION>(w);
  c.image_height = static_cast<JDIMENSION>(h);
  c.input_components = 3;
  c.in_color_space = JCS_RGB;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, 95, TRUE);
  jpeg_start_compress(&c, TRUE);
  auto p = pattern(w, h);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = p.data() + static_cast<std::size_t>(c.next_scanline) * static_cast<std::size_t>(w) * 3;
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  std::fclose(f);
}

data_options opts(const std::string& path) {
  data_options o;
  o.path = path;
  return o;
}

}  // namespace

TEST_CASE("dataset: Fashion-MNIST IDX files from the Debian package", "[tools][dataset]") {
  auto o = opts(SHAPEBIAS_FASHION_MNIST);
  const auto d = dataset::open(o);
  REQUIRE(d->size() == 10000);
  CHECK(d->num_classes() == 10);
  CHECK(d->native_channels() == 1);
  // The first test labels of Fashion-MNIST: ankle boot, pullover, trouser, trouser, shirt.
  CHECK(d->label(0) == 9);
  CHECK(d->label(1) == 2);
  CHECK(d->label(2) == 1);
  CHECK(d->label(4) == 6);
  const auto img = d->load(0);
  CHECK(img.height == 28);
  CHECK(img.width == 28);
  CHECK(img.pixels.size() == 784);
  o.split = "train";
  CHECK(dataset::open(o)->size() == 60000);
  CHECK(d->describe()["files"][0]["sha256"].get<std::string>().size() == 64);
}

TEST_CASE("dataset: broken IDX files are refused", "[tools][dataset]") {
  tmpdir t;
  auto write = [&](const std::string& name, const std::vector<unsigned char>& bytes) {
    gzFile g = gzopen((t / name).c_str(), "wb");
    gzwrite(g, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(g);
  };
  // Two 2x2 images, but only 7 pixel bytes.
  write("t10k-images-idx3-ubyte.gz", {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2, 1, 2, 3, 4, 5, 6, 7});
  write("t10k-labels-idx1-ubyte.gz", {0, 0, 8, 1, 0, 0, 0, 2, 1, 2});
  CHECK_THROWS_WITH(dataset::open(opts(t.path.string())), Catch::Contains("size mismatch"));
  write("t10k-images-idx3-ubyte.gz", {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8});
  write("t10k-labels-idx1-ubyte.gz", {0, 0, 8, 1, 0, 0, 0, 2, 1, 12});
  CHECK_THROWS_WITH(dataset::open(opts(t.path.string())), Catch::Contains("label 12") && Catch::Contains("out of range"));
  write("t10k-labels-idx1-ubyte.gz", {0, 0, 8, 3, 0, 0, 0, 2, 1, 2});
  CHECK_THROWS_WITH(dataset::open(opts(t.path.string())), Catch::Contains("magic number"));
}

TEST_CASE("dataset: image folders are ordered as torchvision's ImageFolder", "[tools][dataset]") {
  tmpdir t;
  for (const char* d : {"dog", "cat", "cat/sub", "empty"}) fs::create_directories(t.path / d);
  write_png(t / "dog/b.png", 4, 3);
  write_png(t / "dog/a.PNG", 4, 3);
  write_jpeg(t / "cat/z.jpg", 5, 2);
  write_png(t / "cat/sub/a.png", 2, 2);
  std::ofstream(t / "cat/notes.txt") << "not an image";
  const auto d = dataset::open(opts(t.path.string()));
  REQUIRE(d->size() == 4);
  CHECK(d->num_classes() == 3);  // cat, dog, empty
  CHECK(d->item_name(0) == "'" + (t / "cat/z.jpg") + "'");
  CHECK(d->item_name(1) == "'" + (t / "cat/sub/a.png") + "'");
  CHECK(d->item_name(2) == "'" + (t / "dog/a.PNG") + "'");
  CHECK(d->label(0) == 0);
  CHECK(d->label(3) == 1);
  const auto png = d->load(2);
  CHECK(png.width == 4);
  CHECK(png.height == 3);
  CHECK(png.pixels == pattern(4, 3));  // PNG is lossless
  const auto jpg = d->load(0);
  CHECK(jpg.width == 5);
  CHECK(jpg.height == 2);
}

TEST_CASE("dataset: list files of 'path label' lines", "[tools][dataset]") {
  tmpdir t;
  write_png(t / "a b.png", 2, 2);
  write_jpeg(t / "c.jpg", 3, 3);
  std::ofstream(t / "list.txt") << "# comment\na b.png 3\n\n" << (t / "c.jpg") << "\t0\r\n";
  const auto d = dataset::open(opts(t / "list.txt"));
  REQUIRE(d->size() == 2);
  CHECK(d->label(0) == 3);
  CHECK(d->label(1) == 0);
  CHECK(d->load(0).width == 2);
  CHECK(d->num_classes() == 0);
  std::ofstream(t / "bad.txt") << "a b.png x\n";
  CHECK_THROWS_WITH(dataset::open(opts(t / "bad.txt")), Catch::Contains("line 1") && Catch::Contains("expected 'path label'"));
  std::ofstream(t / "neg.txt") << "a b.png -1\n";
  CHECK_THROWS_WITH(dataset::open(opts(t / "neg.txt")), Catch::Contains("out of range"));
}

TEST_CASE("dataset: images that do not decode", "[tools][dataset]") {
  tmpdir t;
  std::ofstream(t / "text.png") << "this is not a PNG";
  CHECK_THROWS_WITH(decode_image(t / "text.png"), Catch::Contains("text.png") && Catch::Contains("not a JPEG or PNG"));
  write_jpeg(t / "full.jpg", 64, 64);
  std::filesystem::copy_file(t / "full.jpg", t / "cut.jpg");
  std::filesystem::resize_file(t / "cut.jpg", std::filesystem::file_size(t / "full.jpg") / 2);
  CHECK_THROWS_WITH(decode_image(t / "cut.jpg"), Catch::Contains("cut.jpg") && Catch::Contains("does not decode as JPEG"));
  write_png(t / "full.png", 64, 64);
  std::filesystem::copy_file(t / "full.png", t / "cut.png");
  std::filesystem::resize_file(t / "cut.png", std::filesystem::file_size(t / "full.png") / 2);
  CHECK_THROWS_WITH(decode_image(t / "cut.png"), Catch::Contains("does not decode as PNG"));
  CHECK_THROWS_WITH(decode_image(t / "none.png"), Catch::Contains("cannot open image"));
}

TEST_CASE("dataset: channel conversion and normalisation settings", "[tools][dataset]") {
  image rgb{1, 2, 3, {255, 0, 0, 10, 20, 30}};
  const auto gray = convert_channels(rgb, 1);
  // PIL: L = (R*19595 + G*38470 + B*7471 + 0x8000) >> 16; (10,20,30) -> 1222248 >> 16 = 18 (PIL agrees)
  CHECK(gray.pixels == std::vector<std::uint8_t>{76, 18});
  CHECK(convert_channels(gray, 3).pixels == std::vector<std::uint8_t>{76, 76, 76, 18, 18, 18});
  data_options o;
  o.normalize = "imagenet";
  CHECK(resolve_preprocessing(o, 3).mean == std::vector<float>{0.485f, 0.456f, 0.406f});
  CHECK_THROWS_AS(resolve_preprocessing(o, 1), usage_error);
  o.normalize = "0.5/0.25";
  const auto p = resolve_preprocessing(o, 3);
  CHECK(p.mean == std::vector<float>{0.5f, 0.5f, 0.5f});
  CHECK(p.std == std::vector<float>{0.25f, 0.25f, 0.25f});
  o.normalize = "0.1,0.2/1";
  CHECK_THROWS_WITH(resolve_preprocessing(o, 3), Catch::Contains("2 values for 3 channels"));
  o.normalize = "0.5/0";
  CHECK_THROWS_AS(resolve_preprocessing(o, 1), usage_error);
  o.normalize = "foo";
  CHECK_THROWS_AS(resolve_preprocessing(o, 1), usage_error);
}
