// SPDX-License-Identifier: MIT
// The shapebias pipe stream: the batches of a store, framed as a sequence of NPY records so that a
// ten-line numpy loop can read it (docs/stream.md). HDF5 cannot write to a pipe; this can.
//
// Layout: a HEADER control record, then per batch a BATCH control record, ids (<i8 [B]),
// labels (<i8 [B]) and one <f4 [B, ...] array per layer, then an END control record with the row
// count and a CRC-32 of every data byte. A control record is a |u1 NPY array holding UTF-8 JSON
// with a "kind" key. Bytes after END are an error, and so is an end of input before END.
//
// The NPY codec is written here rather than taken from xtensor's xnpy, because xnpy neither reports
// a short read (a truncated stream would pass as data) nor lets a reader peek at a record's dtype.
#pragma once

#include <zlib.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <xtensor/xarray.hpp>

#include "shapebias/core/errors.hpp"
#include "shapebias/io/batch.hpp"
#include "shapebias/io/provenance.hpp"

namespace shapebias::io {

inline constexpr const char* stream_format = "shapebias-stream";
inline constexpr std::int64_t stream_format_version = 1;

namespace npy {

/// The descriptor and shape of one NPY record, read before its data.
struct record_info {
  std::string descr;  // "<f4", "<i8" or "|u1"
  std::vector<std::size_t> shape;
  std::size_t count() const noexcept {
    std::size_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
  std::size_t item_size() const { return descr == "<f4" ? 4 : descr == "<i8" ? 8 : 1; }
};

inline std::string header_text(const std::string& descr, const std::size_t* shape, std::size_t ndim) {
  std::string s = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (";
  for (std::size_t i = 0; i < ndim; ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  s += ndim == 1 ? ",), }" : "), }";
  // Pad with spaces so that magic(6) + version(2) + length(2) + header + '\n' is a multiple of 64.
  const std::size_t total = 10 + s.size() + 1;
  s.append((64 - total % 64) % 64, ' ');
  s += '\n';
  return s;
}

/// Writes one NPY v1.0 record (header and data) to `out`.
inline void write(std::FILE* out, const std::string& descr, const std::vector<std::size_t>& shape,
                  const void* data, std::size_t bytes, const std::string& name) {
  const std::string h = header_text(descr, shape.data(), shape.size());
  char pre[10] = {'\x93', 'N', 'U', 'M', 'P', 'Y', 1, 0, 0, 0};
  pre[8] = static_cast<char>(h.size() & 0xff);
  pre[9] = static_cast<char>((h.size() >> 8) & 0xff);
  if (std::fwrite(pre, 1, 10, out) != 10 || std::fwrite(h.data(), 1, h.size(), out) != h.size() ||
      (bytes && std::fwrite(data, 1, bytes, out) != bytes))
    throw io_error(quote_name(name) + ": write failed: " + std::strerror(errno));
}

namespace detail {
inline std::string value_after(const std::string& h, const std::string& key) {
  const auto k = h.find("'" + key + "'");
  if (k == std::string::npos) return {};
  auto p = h.find(':', k);
  if (p == std::string::npos) return {};
  ++p;
  while (p < h.size() && h[p] == ' ') ++p;
  return h.substr(p);
}
}  // namespace detail

/// Reads one NPY header. Returns nullopt at a clean end of input (no byte available); throws
/// io_error for anything that is not a well-formed record header.
inline std::optional<record_info> read_header(std::FILE* in, const std::string& name) {
  unsigned char pre[8];
  const std::size_t got = std::fread(pre, 1, 8, in);
  if (got == 0 && std::feof(in)) return std::nullopt;
  if (got != 8) throw io_error(quote_name(name) + ": truncated stream (inside a record header)");
  if (std::memcmp(pre, "\x93NUMPY", 6) != 0)
    throw io_error(quote_name(name) + ": corrupt stream (expected an NPY record, found other bytes)");
  std::size_t len = 0;
  if (pre[6] == 1) {
    unsigned char l[2];
    if (std::fread(l, 1, 2, in) != 2) throw io_error(quote_name(name) + ": truncated stream (record header)");
    len = l[0] | (std::size_t{l[1]} << 8);
  } else if (pre[6] == 2 || pre[6] == 3) {
    unsigned char l[4];
    if (std::fread(l, 1, 4, in) != 4) throw io_error(quote_name(name) + ": truncated stream (record header)");
    len = l[0] | (std::size_t{l[1]} << 8) | (std::size_t{l[2]} << 16) | (std::size_t{l[3]} << 24);
  } else {
    throw io_error(quote_name(name) + ": corrupt stream (NPY version " + std::to_string(pre[6]) + ")");
  }
  if (len > (1u << 20)) throw io_error(quote_name(name) + ": corrupt stream (NPY header too long)");
  std::string h(len, '\0');
  if (std::fread(h.data(), 1, len, in) != len) throw io_error(quote_name(name) + ": truncated stream (record header)");
  record_info r;
  const auto d = detail::value_after(h, "descr");
  if (d.size() < 5 || d[0] != '\'') throw io_error(quote_name(name) + ": corrupt stream (NPY header without descr)");
  r.descr = d.substr(1, d.find('\'', 1) - 1);
  if (r.descr != "<f4" && r.descr != "<i8" && r.descr != "|u1")
    throw io_error(quote_name(name) + ": unsupported NPY dtype '" + r.descr + "' (expected <f4, <i8 or |u1)");
  if (detail::value_after(h, "fortran_order").rfind("False", 0) != 0)
    throw io_error(quote_name(name) + ": Fortran-ordered NPY records are not supported");
  const auto s = detail::value_after(h, "shape");
  if (s.empty() || s[0] != '(') throw io_error(quote_name(name) + ": corrupt stream (NPY header without shape)");
  const auto close = s.find(')');
  if (close == std::string::npos) throw io_error(quote_name(name) + ": corrupt stream (NPY shape)");
  std::size_t pos = 1;
  while (pos < close) {
    while (pos < close && (s[pos] == ' ' || s[pos] == ',')) ++pos;
    if (pos >= close) break;
    std::size_t used = 0;
    try {
      r.shape.push_back(std::stoull(s.substr(pos, close - pos), &used));
    } catch (const std::exception&) {
      throw io_error(quote_name(name) + ": corrupt stream (NPY shape)");
    }
    pos += used;
  }
  return r;
}

/// Reads the data of a record whose header was just read.
inline void read_data(std::FILE* in, const record_info& r, void* out, const std::string& name) {
  const std::size_t bytes = r.count() * r.item_size();
  if (bytes && std::fread(out, 1, bytes, in) != bytes)
    throw io_error(quote_name(name) + ": truncated stream (inside a data record)");
}

}  // namespace npy

/// Writes the stream to a FILE* (stdout, a pipe or a file). Each batch is flushed.
class stream_writer : public batch_sink {
 public:
  stream_writer(std::FILE* out, std::string name, io::header hdr)
      : out_(out), name_(std::move(name)), header_(std::move(hdr)) {
    nlohmann::json h{{"kind", "header"}, {"format", stream_format}, {"format_version", stream_format_version}};
    auto& layers = h["layers"] = nlohmann::json::array();
    for (const auto& l : header_.layers) layers.push_back({{"name", l.name}, {"shape", l.shape}});
    auto& prov = h["provenance"] = nlohmann::json::array();
    for (const auto& r : header_.provenance) {
      auto j = nlohmann::json::parse(r, nullptr, false);
      prov.push_back(j.is_discarded() ? nlohmann::json(r) : j);  // a record that is not JSON stays text
    }
    control(h);
  }

  void write(const batch_view& b) override {
    if (b.data.size() != header_.layers.size())
      throw std::invalid_argument("stream_writer: batch has " + std::to_string(b.data.size()) + " layers, stream has " +
                                  std::to_string(header_.layers.size()));
    control({{"kind", "batch"}, {"first_row", rows_}, {"rows", b.rows}});
    data("<i8", {b.rows}, b.ids, b.rows * 8);
    data("<i8", {b.rows}, b.labels, b.rows * 8);
    for (std::size_t i = 0; i < b.data.size(); ++i) {
      std::vector<std::size_t> shape{b.rows};
      shape.insert(shape.end(), header_.layers[i].shape.begin(), header_.layers[i].shape.end());
      data("<f4", shape, b.data[i], b.rows * header_.layers[i].row_size() * 4);
    }
    rows_ += b.rows;
    flush();
  }

  void finish(const std::vector<std::string>* = nullptr) override {
    control({{"kind", "end"}, {"rows", rows_}, {"crc32", crc_}, {"finished", utc_now()}});
    flush();
  }

 private:
  void control(const nlohmann::json& j) {
    const std::string s = j.dump();
    npy::write(out_, "|u1", {s.size()}, s.data(), s.size(), name_);
  }
  void data(const char* descr, const std::vector<std::size_t>& shape, const void* p, std::size_t bytes) {
    crc_ = crc32_z(crc_, static_cast<const Bytef*>(p), bytes);
    npy::write(out_, descr, shape, p, bytes, name_);
  }
  void flush() {
    if (std::fflush(out_) != 0) throw io_error(quote_name(name_) + ": write failed: " + std::strerror(errno));
  }

  std::FILE* out_;
  std::string name_;
  io::header header_;
  std::uint64_t rows_ = 0;
  unsigned long crc_ = crc32_z(0L, Z_NULL, 0);
};

/// Reads a stream from a FILE*. The header is read by the constructor; next() verifies the END
/// record (row count, CRC-32, nothing after it) before it reports the end.
class stream_reader : public batch_source {
 public:
  stream_reader(std::FILE* in, std::string name) : in_(in), name_(std::move(name)) {
    const auto h = control();
    if (!h || h->value("kind", "") != "header" || h->value("format", "") != stream_format)
      throw io_error(quote_name(name_) + ": not a shapebias stream (no header record)");
    if (h->value("format_version", 0) != stream_format_version)
      throw io_error(quote_name(name_) + ": stream format version " + std::to_string(h->value("format_version", 0)) +
                     ", this build reads " + std::to_string(stream_format_version));
    try {
      for (const auto& l : h->at("layers")) {
        header_.layers.push_back({l.at("name").get<std::string>(), l.at("shape").get<std::vector<std::size_t>>()});
        std::size_t n = 1;
        for (auto d : header_.layers.back().shape)
          if (d == 0 || (n *= d) > max_row_elements) throw io_error(quote_name(name_) + ": corrupt stream header (layer shape)");
      }
      for (const auto& r : h->at("provenance")) header_.provenance.push_back(r.is_string() ? r.get<std::string>() : r.dump());
    } catch (const nlohmann::json::exception&) {
      throw io_error(quote_name(name_) + ": corrupt stream header");
    }
  }

  const io::header& header() const override { return header_; }
  std::string format() const override {
    return std::string(stream_format) + " v" + std::to_string(stream_format_version);
  }

  std::optional<batch> next() override {
    try {
      return next_batch();
    } catch (const nlohmann::json::exception&) {
      throw io_error(quote_name(name_) + ": corrupt stream (malformed control record after row " + std::to_string(rows_) + ")");
    }
  }

 private:
  // Bounds that keep a damaged stream from asking for absurd allocations.
  static constexpr std::size_t max_row_elements = std::size_t{1} << 32;
  static constexpr std::size_t max_batch_rows = std::size_t{1} << 24;
  static constexpr std::size_t max_control_bytes = std::size_t{64} << 20;

  std::optional<batch> next_batch() {
    if (ended_) return std::nullopt;
    const auto c = control();
    if (!c) throw io_error(quote_name(name_) + ": truncated stream (no end record after " + std::to_string(rows_) + " rows)");
    const std::string kind = c->value("kind", "");
    if (kind == "end") {
      ended_ = true;
      if (c->value("rows", std::uint64_t{0}) != rows_)
        throw io_error(quote_name(name_) + ": corrupt stream (end record says " + std::to_string(c->value("rows", 0)) +
                       " rows, read " + std::to_string(rows_) + ")");
      if (c->value("crc32", 0UL) != crc_) throw io_error(quote_name(name_) + ": corrupt stream (CRC-32 mismatch)");
      if (std::fgetc(in_) != EOF) throw io_error(quote_name(name_) + ": corrupt stream (bytes after the end record)");
      if (const auto t = c->value("finished", ""); !t.empty()) header_.provenance = stamp_finished(header_.provenance, t);
      return std::nullopt;
    }
    if (kind != "batch") throw io_error(quote_name(name_) + ": corrupt stream (unexpected '" + kind + "' record)");
    const auto n = c->at("rows").get<std::size_t>();
    if (n > max_batch_rows) throw io_error(quote_name(name_) + ": corrupt stream (batch of " + std::to_string(n) + " rows)");
    if (c->value("first_row", std::uint64_t{0}) != rows_)
      throw io_error(quote_name(name_) + ": corrupt stream (batch starts at row " +
                     std::to_string(c->value("first_row", 0)) + ", expected " + std::to_string(rows_) + ")");
    batch b;
    b.first_row = rows_;
    b.ids.resize(n);
    b.labels.resize(n);
    array("<i8", {n}, b.ids.data(), "ids");
    array("<i8", {n}, b.labels.data(), "labels");
    for (const auto& l : header_.layers) {
      std::vector<std::size_t> shape{n};
      shape.insert(shape.end(), l.shape.begin(), l.shape.end());
      xt::xarray<float> a(shape);
      array("<f4", shape, a.data(), "layer '" + l.name + "'");
      b.data.push_back(std::move(a));
    }
    rows_ += n;
    return b;
  }

  std::optional<nlohmann::json> control() {
    const auto r = npy::read_header(in_, name_);
    if (!r) return std::nullopt;
    if (r->descr != "|u1" || r->shape.size() != 1)
      throw io_error(quote_name(name_) + ": corrupt stream (expected a control record, found a " + r->descr + " array)");
    if (r->count() > max_control_bytes) throw io_error(quote_name(name_) + ": corrupt stream (control record too long)");
    std::string s(r->count(), '\0');
    npy::read_data(in_, *r, s.data(), name_);
    auto j = nlohmann::json::parse(s, nullptr, false);
    if (!j.is_object()) throw io_error(quote_name(name_) + ": corrupt stream (control record is not JSON)");
    return j;
  }

  void array(const char* descr, const std::vector<std::size_t>& shape, void* out, const std::string& what) {
    const auto r = npy::read_header(in_, name_);
    if (!r) throw io_error(quote_name(name_) + ": truncated stream (missing " + what + ")");
    if (r->descr != descr || r->shape != shape)
      throw io_error(quote_name(name_) + ": corrupt stream (" + what + " has the wrong dtype or shape)");
    npy::read_data(in_, *r, out, name_);
    crc_ = crc32_z(crc_, static_cast<const Bytef*>(out), r->count() * r->item_size());
  }

  std::FILE* in_;
  std::string name_;
  io::header header_;
  std::uint64_t rows_ = 0;
  bool ended_ = false;
  unsigned long crc_ = crc32_z(0L, Z_NULL, 0);
};

}  // namespace shapebias::io
