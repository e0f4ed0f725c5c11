// SPDX-License-Identifier: MIT
// Tests for include/shapebias/io/stream.hpp: round trip, NPY framing, and that every truncation or
// corruption is an error, never a short result.
#include "shapebias/io/stream.hpp"

#include <catch2/catch.hpp>

#include <cstdio>
#include <memory>

namespace io = shapebias::io;

namespace {

using file_ptr = std::unique_ptr<std::FILE, decltype(&std::fclose)>;

const io::header hdr{{{"layer1", {3, 2, 2}}, {"logits", {4}}}, {R"({"id":"p1","verb":"dump"})"}};

/// A stream of `n` rows in batches of `bs`, as bytes.
std::string make_stream(std::size_t n, std::size_t bs) {
  file_ptr f(std::tmpfile(), std::fclose);
  io::stream_writer w(f.get(), "mem", hdr);
  for (std::size_t first = 0; first < n; first += bs) {
    const std::size_t rows = std::min(bs, n - first);
    std::vector<float> a(rows * 12), b(rows * 4);
    std::vector<std::int64_t> ids(rows), labels(rows);
    for (std::size_t r = 0; r < rows; ++r) {
      ids[r] = static_cast<std::int64_t>(first + r);
      labels[r] = static_cast<std::int64_t>((first + r) % 4);
      for (std::size_t e = 0; e < 12; ++e) a[r * 12 + e] = static_cast<float>((first + r) * 100 + e);
      for (std::size_t e = 0; e < 4; ++e) b[r * 4 + e] = 0.5f * static_cast<float>(first + r);
    }
    w.write({rows, ids.data(), labels.data(), {a.data(), b.data()}});
  }
  w.finish();
  std::string bytes(static_cast<std::size_t>(std::ftell(f.get())), '\0');
  std::rewind(f.get());
  REQUIRE(std::fread(bytes.data(), 1, bytes.size(), f.get()) == bytes.size());
  return bytes;
}

/// Reads a whole stream from bytes; returns the rows seen.
std::size_t read_all(const std::string& bytes) {
  file_ptr f(std::tmpfile(), std::fclose);
  std::fwrite(bytes.data(), 1, bytes.size(), f.get());
  std::rewind(f.get());
  io::stream_reader r(f.get(), "mem");
  std::size_t rows = 0;
  while (auto b = r.next()) {
    for (std::size_t i = 0; i < b->rows(); ++i) {
      REQUIRE(b->ids[i] == static_cast<std::int64_t>(rows + i));
      REQUIRE(b->data[0](i, 2, 1, 0) == static_cast<float>((rows + i) * 100 + 10));
    }
    rows += b->rows();
  }
  return rows;
}

}  // namespace

TEST_CASE("stream: round trip keeps rows, order, header and provenance", "[io][stream]") {
  const auto bytes = make_stream(10, 3);
  CHECK(read_all(bytes) == 10);
  file_ptr f(std::tmpfile(), std::fclose);
  std::fwrite(bytes.data(), 1, bytes.size(), f.get());
  std::rewind(f.get());
  io::stream_reader r(f.get(), "mem");
  CHECK(r.header().layers == hdr.layers);
  CHECK(r.format() == "shapebias-stream v1");
  while (r.next()) {
  }
  CHECK(r.header().provenance.back().find("\"finished\"") != std::string::npos);
}

TEST_CASE("stream: records are NPY v1.0 with 64-byte aligned headers", "[io][stream]") {
  const auto h = io::npy::header_text("<f4", std::vector<std::size_t>{2, 3}.data(), 2);
  CHECK(h.rfind("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 0) == 0);
  CHECK((10 + h.size()) % 64 == 0);
  CHECK(h.back() == '\n');
  const auto one = io::npy::header_text("<i8", std::vector<std::size_t>{5}.data(), 1);
  CHECK(one.find("'shape': (5,)") != std::string::npos);
  const auto bytes = make_stream(1, 1);
  CHECK(bytes.compare(0, 8, std::string("\x93NUMPY\x01\x00", 8)) == 0);
}

TEST_CASE("stream: every truncation is an error", "[io][stream]") {
  const auto bytes = make_stream(5, 2);
  // Cut at every position: nothing may read as a valid, shorter stream.
  std::size_t errors = 0;
  for (std::size_t cut = 0; cut < bytes.size(); ++cut) {
    try {
      read_all(bytes.substr(0, cut));
    } catch (const shapebias::io_error&) {
      ++errors;
    }
  }
  CHECK(errors == bytes.size());
}

TEST_CASE("stream: corruption is an error", "[io][stream]") {
  auto bytes = make_stream(4, 2);
  SECTION("a flipped data byte fails the CRC") {
    // The last data record before the END control record is logits of the last batch.
    const auto end = bytes.rfind("\x93NUMPY");
    bytes[end - 3] ^= 0x40;
    CHECK_THROWS_WITH(read_all(bytes), Catch::Contains("CRC-32"));
  }
  SECTION("bytes after the end record") {
    bytes += "x";
    CHECK_THROWS_WITH(read_all(bytes), Catch::Contains("after the end record"));
  }
  SECTION("not a stream at all") {
    CHECK_THROWS_WITH(read_all("hello, this is not a stream"), Catch::Contains("expected an NPY record"));
  }
  SECTION("a control record with a missing field") {
    const auto k = bytes.find("\"rows\":2");
    REQUIRE(k != std::string::npos);
    bytes[k + 4] = 'z';  // "rowz": same length, so the framing stays intact
    CHECK_THROWS_WITH(read_all(bytes), Catch::Contains("malformed control record"));
  }
  SECTION("a damaged record header") {
    bytes[bytes.find("'descr'") + 10] = 'X';
    CHECK_THROWS_AS(read_all(bytes), shapebias::io_error);
  }
}
