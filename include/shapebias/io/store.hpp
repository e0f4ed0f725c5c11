// SPDX-License-Identifier: MIT
// The HDF5 tensor store: one chunked, extensible float32 dataset per layer, appended batch by batch,
// with /index/{input_id,label} in lockstep, a provenance log and a completion marker written last.
// The schema is documented in docs/schema.md.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <xtensor/xarray.hpp>

#include "shapebias/io/batch.hpp"
#include "shapebias/io/hdf5.hpp"
#include "shapebias/io/provenance.hpp"

namespace shapebias::io {

inline constexpr const char* store_format = "shapebias-store";
inline constexpr std::int64_t store_format_version = 1;

struct store_options {
  /// Rows per chunk; 0 chooses about 2 MiB per chunk (at least one row), dividing batch_rows.
  std::size_t chunk_rows = 0;
  /// Rows per write() when known: chunks then never straddle two writes, so HDF5 never has to
  /// read back a partly written chunk.
  std::size_t batch_rows = 0;
  /// Deflate level 1–9 with the shuffle filter, or 0 for none.
  int deflate = 0;
  /// Opaque text that a resumed run must match (model hash, data set, layers, preprocessing).
  std::string resume_key;
};

namespace detail {
inline std::size_t auto_chunk_rows(std::size_t row_bytes, std::size_t requested, std::size_t batch_rows = 0) {
  if (requested) return requested;
  const std::size_t target = std::size_t{2} << 20;
  std::size_t rows = std::clamp<std::size_t>(target / std::max<std::size_t>(row_bytes, 1), 1, 4096);
  if (batch_rows)
    while (batch_rows % rows) --rows;  // the largest divisor of the batch within the target
  return rows;
}

inline std::string dataset_path(const std::string& layer) { return "/activations/" + layer; }

inline void validate_layer_name(const std::string& name) {
  if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
    throw std::invalid_argument("layer name '" + name + "' cannot name an HDF5 dataset");
}

/// The file and memory dataspaces of rows [first, first+n) of a dataset whose dims are `d`.
inline std::pair<h5::handle, h5::handle> row_spaces(hid_t dset, std::vector<hsize_t> d, hsize_t first, hsize_t n) {
  h5::handle fspace(H5Dget_space(dset));
  std::vector<hsize_t> start(d.size(), 0);
  start[0] = first;
  d[0] = n;
  H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start.data(), nullptr, d.data(), nullptr);
  return {std::move(fspace), h5::handle(H5Screate_simple(static_cast<int>(d.size()), d.data(), nullptr))};
}

/// Appends `n` rows of `mem_type` along axis 0 of an extensible dataset.
inline void append_rows(hid_t dset, hid_t mem_type, const void* data, std::size_t n,
                        const std::string& file, const std::string& what) {
  auto d = h5::dims(dset);
  const hsize_t first = d[0];
  d[0] += n;
  h5::check(H5Dset_extent(dset, d.data()), file, "cannot extend " + what);
  const auto [fspace, mspace] = row_spaces(dset, d, first, n);
  h5::check(H5Dwrite(dset, mem_type, mspace.get(), fspace.get(), H5P_DEFAULT, data), file, "cannot write " + what);
}

/// Reads rows [first, first+n) of a dataset into `out` (which must hold n × row elements).
inline void read_rows(hid_t dset, hid_t mem_type, void* out, std::uint64_t first, std::size_t n,
                      const std::string& file, const std::string& what) {
  const auto d = h5::dims(dset);
  if (first + n > d[0])
    throw std::out_of_range(quote_name(file) + ": rows " + std::to_string(first) + "+" + std::to_string(n) +
                            " are past the end of " + what + " (" + std::to_string(d[0]) + " rows)");
  const auto [fspace, mspace] = row_spaces(dset, d, first, n);
  h5::check(H5Dread(dset, mem_type, mspace.get(), fspace.get(), H5P_DEFAULT, out), file, "cannot read " + what);
}

inline h5::handle create_extensible(hid_t file_id, const std::string& path, hid_t type,
                                    std::vector<hsize_t> row_shape, std::size_t chunk_rows, int deflate,
                                    const std::string& file) {
  std::vector<hsize_t> dims{0}, maxdims{H5S_UNLIMITED}, chunk{chunk_rows};
  for (auto s : row_shape) {
    dims.push_back(s);
    maxdims.push_back(s);
    chunk.push_back(s);
  }
  h5::handle space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), maxdims.data()));
  h5::handle dcpl(H5Pcreate(H5P_DATASET_CREATE));
  H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data());
  if (deflate > 0) {
    H5Pset_shuffle(dcpl.get());
    H5Pset_deflate(dcpl.get(), static_cast<unsigned>(deflate));
  }
  h5::handle lcpl(H5Pcreate(H5P_LINK_CREATE));
  H5Pset_create_intermediate_group(lcpl.get(), 1);
  return h5::handle(h5::check(
      H5Dcreate2(file_id, path.c_str(), type, space.get(), lcpl.get(), dcpl.get(), H5P_DEFAULT), file,
      "cannot create dataset '" + path + "'"));
}
}  // namespace detail

/// Thrown by store_writer::resume() when the partial file left by a killed run does not open
/// (a kill during an HDF5 metadata update can leave it so); starting again is then the remedy.
class unreadable_partial : public io_error {
 public:
  using io_error::io_error;
};

/// Writes a store. Rows go to "<path>.partial"; finish() writes the provenance log, sets the
/// completion marker and renames the file to <path>, so a killed run never leaves <path> behind.
/// Each write() ends with a flush, so a killed run can be resumed from the last whole batch.
class store_writer : public batch_sink {
 public:
  /// Starts a new store (replacing any earlier partial file).
  store_writer(std::string path, io::header hdr, store_options opt = {})
      : path_(std::move(path)), partial_(path_ + ".partial"), header_(std::move(hdr)), opt_(std::move(opt)) {
    h5::quiet();
    for (const auto& l : header_.layers) detail::validate_layer_name(l.name);
    file_ = h5::handle(h5::check(H5Fcreate(partial_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT),
                                 partial_, "cannot create HDF5 file"));
    const hid_t f = file_.get();
    h5::write_attribute(f, "format", store_format, partial_);
    h5::write_attribute(f, "format_version", store_format_version, partial_);
    h5::write_attribute(f, "complete", std::int64_t{0}, partial_);
    h5::write_attribute(f, "resume_key", opt_.resume_key, partial_);
    nlohmann::json names = nlohmann::json::array();
    for (const auto& l : header_.layers) {
      names.push_back(l.name);
      const std::size_t chunk = detail::auto_chunk_rows(l.row_size() * sizeof(float), opt_.chunk_rows, opt_.batch_rows);
      auto d = detail::create_extensible(f, detail::dataset_path(l.name), H5T_IEEE_F32LE,
                                         {l.shape.begin(), l.shape.end()}, chunk, opt_.deflate, partial_);
      h5::write_attribute(d.get(), "layer", l.name, partial_);
      h5::write_attribute(d.get(), "unit_axis", std::int64_t{1}, partial_);
      layers_.push_back(std::move(d));
    }
    h5::write_attribute(f, "layers", names.dump(), partial_);
    ids_ = detail::create_extensible(f, "/index/input_id", H5T_STD_I64LE, {}, 4096, 0, partial_);
    labels_ = detail::create_extensible(f, "/index/label", H5T_STD_I64LE, {}, 4096, 0, partial_);
  }

  /// Reopens "<path>.partial" left by a killed run. Returns nullopt when there is none, and throws
  /// io_error when it belongs to a different run (other layers or resume key) or cannot be opened.
  /// All datasets are cut back to the rows that every one of them holds.
  static std::optional<store_writer> resume(std::string path, io::header hdr, store_options opt = {}) {
    h5::quiet();
    const std::string partial = path + ".partial";
    if (!std::filesystem::exists(partial)) return std::nullopt;
    store_writer w;
    w.path_ = std::move(path);
    w.partial_ = partial;
    w.header_ = std::move(hdr);
    w.opt_ = std::move(opt);
    try {
      w.file_ = h5::handle(h5::check(H5Fopen(partial.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), partial,
                                     "cannot reopen partial store to resume"));
    } catch (const io_error& e) {
      throw unreadable_partial(e.what());
    }
    const hid_t f = w.file_.get();
    if (!h5::has_attribute(f, "format") || h5::read_string_attribute(f, "format", partial) != store_format)
      throw io_error(quote_name(partial) + ": not a shapebias store; cannot resume");
    if (h5::read_string_attribute(f, "resume_key", partial) != w.opt_.resume_key)
      throw io_error(quote_name(partial) + ": was made with other settings (model, data, layers or "
                     "preprocessing); remove it or run without --resume");
    std::uint64_t rows = UINT64_MAX;
    auto open = [&](const std::string& p) {
      h5::handle d(h5::check(H5Dopen2(f, p.c_str(), H5P_DEFAULT), partial, "cannot open '" + p + "'"));
      rows = std::min<std::uint64_t>(rows, h5::dims(d.get())[0]);
      return d;
    };
    for (const auto& l : w.header_.layers) w.layers_.push_back(open(detail::dataset_path(l.name)));
    w.ids_ = open("/index/input_id");
    w.labels_ = open("/index/label");
    for (auto* d : {&w.ids_, &w.labels_}) w.truncate(d->get(), rows);
    for (auto& d : w.layers_) w.truncate(d.get(), rows);
    w.rows_ = rows;
    return w;
  }

  store_writer(store_writer&&) noexcept = default;
  store_writer& operator=(store_writer&&) noexcept = default;
  ~store_writer() override = default;  // without finish(), the .partial file stays for --resume

  /// Rows written so far (including those found by resume()).
  std::uint64_t rows() const noexcept { return rows_; }
  const std::string& partial_path() const noexcept { return partial_; }

  void write(const batch_view& b) override {
    if (b.data.size() != layers_.size())
      throw std::invalid_argument("store_writer: batch has " + std::to_string(b.data.size()) +
                                  " layers, store has " + std::to_string(layers_.size()));
    for (std::size_t i = 0; i < layers_.size(); ++i)
      detail::append_rows(layers_[i].get(), H5T_NATIVE_FLOAT, b.data[i], b.rows, partial_,
                          "layer '" + header_.layers[i].name + "'");
    detail::append_rows(ids_.get(), H5T_NATIVE_INT64, b.ids, b.rows, partial_, "/index/input_id");
    detail::append_rows(labels_.get(), H5T_NATIVE_INT64, b.labels, b.rows, partial_, "/index/label");
    h5::check(H5Fflush(file_.get(), H5F_SCOPE_GLOBAL), partial_, "cannot flush");
    rows_ += b.rows;
  }

  void finish(const std::vector<std::string>* replacement = nullptr) override {
    const hid_t f = file_.get();
    const auto log = stamp_finished(replacement ? *replacement : header_.provenance);
    {
      h5::handle type(H5Tcopy(H5T_C_S1));
      H5Tset_size(type.get(), H5T_VARIABLE);
      H5Tset_cset(type.get(), H5T_CSET_UTF8);
      if (h5::exists(f, "/provenance/log")) H5Ldelete(f, "/provenance/log", H5P_DEFAULT);
      auto d = detail::create_extensible(f, "/provenance/log", type.get(), {}, 64, 0, partial_);
      std::vector<const char*> p;
      for (const auto& r : log) p.push_back(r.c_str());
      detail::append_rows(d.get(), type.get(), p.data(), p.size(), partial_, "/provenance/log");
      // The newest record's fields, also as root attributes, for tools that only read attributes.
      if (!log.empty()) {
        const auto rec = nlohmann::json::parse(log.back(), nullptr, false);
        if (rec.is_object())
          for (const auto& [k, v] : rec.items())
            h5::write_attribute(f, "provenance." + k, v.is_string() ? v.get<std::string>() : v.dump(),
                                partial_);
      }
    }
    h5::write_attribute(f, "complete", std::int64_t{1}, partial_);
    h5::check(H5Fflush(f, H5F_SCOPE_GLOBAL), partial_, "cannot flush");
    layers_.clear();
    ids_.reset();
    labels_.reset();
    file_.reset();
    std::error_code ec;
    std::filesystem::rename(partial_, path_, ec);
    if (ec) throw io_error(quote_name(path_) + ": cannot rename the finished store into place: " + ec.message());
  }

 private:
  store_writer() = default;
  void truncate(hid_t dset, std::uint64_t rows) {
    auto d = h5::dims(dset);
    d[0] = rows;
    h5::check(H5Dset_extent(dset, d.data()), partial_, "cannot cut partial store back");
  }

  std::string path_, partial_;
  io::header header_;
  store_options opt_;
  h5::handle file_;
  std::vector<h5::handle> layers_;
  h5::handle ids_, labels_;
  std::uint64_t rows_ = 0;
};

/// Reads a store. Any range of rows can be read; batches() streams it with memory bounded by one
/// batch (plus HDF5's chunk cache).
class store_reader {
 public:
  /// Opens `path`. Throws io_error when the file is missing, unreadable, not a shapebias store, or
  /// incomplete (unless allow_incomplete).
  explicit store_reader(std::string path, bool allow_incomplete = false) : path_(std::move(path)) {
    h5::quiet();
    std::error_code ec;
    if (!std::filesystem::exists(path_, ec)) throw io_error(quote_name(path_) + ": no such file");
    if (H5Fis_hdf5(path_.c_str()) <= 0) {
      H5Eclear2(H5E_DEFAULT);
      std::FILE* fp = std::fopen(path_.c_str(), "rb");
      if (!fp) throw io_error(quote_name(path_) + ": cannot open for reading");
      std::fclose(fp);
      throw io_error(quote_name(path_) + ": not an HDF5 file (or truncated)");
    }
    file_ = h5::handle(h5::check(H5Fopen(path_.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), path_,
                                 "cannot open HDF5 file (truncated or damaged?)"));
    const hid_t f = file_.get();
    if (!h5::has_attribute(f, "format") || h5::read_string_attribute(f, "format", path_) != store_format)
      throw io_error(quote_name(path_) + ": an HDF5 file, but not a shapebias store (no format='" +
                     std::string(store_format) + "' attribute)");
    const auto ver = h5::read_int_attribute(f, "format_version", path_);
    if (ver != store_format_version)
      throw io_error(quote_name(path_) + ": store format version " + std::to_string(ver) + ", this build reads " +
                     std::to_string(store_format_version));
    complete_ = h5::read_int_attribute(f, "complete", path_) == 1;
    if (!complete_ && !allow_incomplete)
      throw io_error(quote_name(path_) + ": incomplete store (the run that wrote it did not finish)");

    const auto names = nlohmann::json::parse(h5::read_string_attribute(f, "layers", path_), nullptr, false);
    if (!names.is_array() || !std::all_of(names.begin(), names.end(), [](const auto& n) { return n.is_string(); }))
      throw io_error(quote_name(path_) + ": corrupt 'layers' attribute");
    h5::handle dapl(H5Pcreate(H5P_DATASET_ACCESS));
    H5Pset_chunk_cache(dapl.get(), 521, std::size_t{32} << 20, 1.0);  // bounded: 32 MiB per dataset
    for (const auto& n : names) {
      const std::string name = n.get<std::string>();
      const auto p = detail::dataset_path(name);
      h5::handle d(h5::check(H5Dopen2(f, p.c_str(), dapl.get()), path_, "cannot open '" + p + "'"));
      const auto dd = h5::dims(d.get());
      header_.layers.push_back({name, std::vector<std::size_t>(dd.begin() + 1, dd.end())});
      layers_.push_back(std::move(d));
    }
    ids_ = h5::handle(h5::check(H5Dopen2(f, "/index/input_id", H5P_DEFAULT), path_, "cannot open /index/input_id"));
    labels_ = h5::handle(h5::check(H5Dopen2(f, "/index/label", H5P_DEFAULT), path_, "cannot open /index/label"));
    rows_ = h5::dims(ids_.get())[0];
    if (h5::dims(labels_.get())[0] != rows_) throw io_error(quote_name(path_) + ": /index/label and /index/input_id differ in length");
    for (std::size_t i = 0; i < layers_.size(); ++i)
      if (h5::dims(layers_[i].get())[0] != rows_)
        throw io_error(quote_name(path_) + ": layer '" + header_.layers[i].name + "' has " +
                       std::to_string(h5::dims(layers_[i].get())[0]) + " rows, the index has " +
                       std::to_string(rows_));
    if (h5::exists(f, "/provenance/log")) {
      h5::handle d(h5::check(H5Dopen2(f, "/provenance/log", H5P_DEFAULT), path_, "cannot open /provenance/log"));
      const auto n = h5::dims(d.get())[0];
      std::vector<char*> p(n, nullptr);
      h5::handle ftype(H5Dget_type(d.get()));
      if (H5Tget_class(ftype.get()) != H5T_STRING || H5Tis_variable_str(ftype.get()) <= 0)
        throw io_error(quote_name(path_) + ": /provenance/log is not a variable-length string dataset");
      h5::handle type(H5Tcopy(H5T_C_S1));
      H5Tset_size(type.get(), H5T_VARIABLE);
      H5Tset_cset(type.get(), H5Tget_cset(ftype.get()));
      h5::check(H5Dread(d.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, p.data()), path_,
                "cannot read /provenance/log");
      for (auto* s : p) header_.provenance.emplace_back(s ? s : "");
      h5::handle space(H5Dget_space(d.get()));
      H5Dvlen_reclaim(type.get(), space.get(), H5P_DEFAULT, p.data());
    }
  }

  const io::header& header() const noexcept { return header_; }
  const std::string& path() const noexcept { return path_; }
  std::uint64_t rows() const noexcept { return rows_; }
  bool complete() const noexcept { return complete_; }

  /// Rows [first, first+n) of one layer, shape {n, layer shape...}.
  xt::xarray<float> read(std::size_t layer, std::uint64_t first, std::size_t n) const {
    std::vector<std::size_t> shape{n};
    shape.insert(shape.end(), header_.layers.at(layer).shape.begin(), header_.layers.at(layer).shape.end());
    xt::xarray<float> out(shape);
    if (n) detail::read_rows(layers_[layer].get(), H5T_NATIVE_FLOAT, out.data(), first, n, path_,
                             "layer '" + header_.layers[layer].name + "'");
    return out;
  }

  /// Rows [first, first+n) of all (or the given) layers with their ids and labels.
  batch read_batch(std::uint64_t first, std::size_t n, const std::vector<std::size_t>& which) const {
    batch b;
    b.first_row = first;
    b.ids.resize(n);
    b.labels.resize(n);
    if (n) {
      detail::read_rows(ids_.get(), H5T_NATIVE_INT64, b.ids.data(), first, n, path_, "/index/input_id");
      detail::read_rows(labels_.get(), H5T_NATIVE_INT64, b.labels.data(), first, n, path_, "/index/label");
    }
    for (auto l : which) b.data.push_back(read(l, first, n));
    return b;
  }

  /// A source that yields the store in batches of `batch_rows` rows (the last may be shorter).
  class batches_source : public batch_source {
   public:
    batches_source(const store_reader& r, std::size_t batch_rows, std::vector<std::size_t> which)
        : r_(r), n_(batch_rows), which_(std::move(which)) {
      if (n_ == 0) throw std::invalid_argument("batch size must be at least 1");
      for (auto l : which_) hdr_.layers.push_back(r_.header().layers.at(l));
      hdr_.provenance = r_.header().provenance;
    }
    const io::header& header() const override { return hdr_; }
    std::string format() const override {
      return std::string(store_format) + " v" + std::to_string(store_format_version) +
             (r_.complete() ? "" : " (incomplete)");
    }
    std::optional<std::uint64_t> known_rows() const override { return r_.rows(); }
    std::optional<batch> next() override {
      if (pos_ >= r_.rows()) return std::nullopt;
      const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(n_, r_.rows() - pos_));
      auto b = r_.read_batch(pos_, n, which_);
      pos_ += n;
      return b;
    }

   private:
    const store_reader& r_;
    std::size_t n_;
    std::vector<std::size_t> which_;
    io::header hdr_;
    std::uint64_t pos_ = 0;
  };

  /// Streams every layer (or those in `which`) in batches of `batch_rows`. The source refers to
  /// this reader, which must outlive it.
  batches_source batches(std::size_t batch_rows, std::vector<std::size_t> which = {}) const& {
    if (which.empty())
      for (std::size_t i = 0; i < header_.layers.size(); ++i) which.push_back(i);
    return batches_source(*this, batch_rows, std::move(which));
  }
  batches_source batches(std::size_t, std::vector<std::size_t> = {}) const&& = delete;

 private:
  std::string path_;
  h5::handle file_;
  io::header header_;
  std::vector<h5::handle> layers_;
  h5::handle ids_, labels_;
  std::uint64_t rows_ = 0;
  bool complete_ = false;
};

}  // namespace shapebias::io
