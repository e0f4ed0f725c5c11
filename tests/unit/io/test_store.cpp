// SPDX-License-Identifier: MIT
// Tests for include/shapebias/io/store.hpp: layout, streaming reads, completion, resume, bad files.
#include "shapebias/io/store.hpp"

#include <catch2/catch.hpp>

#include <fstream>
#include <numeric>

#include "../tmpdir.hpp"

namespace io = shapebias::io;

namespace {

// Rows of a [N, 2, 3, 4] layer and a [N, 5] layer whose values encode (row, element) exactly.
struct rows_fixture {
  io::header hdr{{{"conv.0", {2, 3, 4}}, {"fc", {5}}}, {R"({"id":"a1","verb":"test"})"}};
  std::vector<float> conv, fc;
  std::vector<std::int64_t> ids, labels;
  explicit rows_fixture(std::size_t n) {
    for (std::size_t r = 0; r < n; ++r) {
      for (std::size_t e = 0; e < 24; ++e) conv.push_back(static_cast<float>(r * 1000 + e));
      for (std::size_t e = 0; e < 5; ++e) fc.push_back(-static_cast<float>(r * 1000 + e));
      ids.push_back(static_cast<std::int64_t>(100 + r));
      labels.push_back(static_cast<std::int64_t>(r % 7));
    }
  }
  io::batch_view rows(std::size_t first, std::size_t n) const {
    return {n, ids.data() + first, labels.data() + first, {conv.data() + first * 24, fc.data() + first * 5}};
  }
  void write(io::batch_sink& w, std::size_t first, std::size_t n, std::size_t batch) const {
    for (std::size_t r = first; r < first + n; r += batch) w.write(rows(r, std::min(batch, first + n - r)));
  }
};

}  // namespace

TEST_CASE("store: written rows read back exactly, in batches of any size", "[io][store]") {
  tmpdir t;
  const rows_fixture f(23);
  io::store_writer w(t / "a.h5", f.hdr);
  f.write(w, 0, 23, 5);
  REQUIRE_FALSE(std::filesystem::exists(t / "a.h5"));  // nothing looks complete before finish()
  w.finish();
  REQUIRE(std::filesystem::exists(t / "a.h5"));
  REQUIRE_FALSE(std::filesystem::exists(t / "a.h5.partial"));

  io::store_reader r(t / "a.h5");
  CHECK(r.rows() == 23);
  CHECK(r.complete());
  REQUIRE(r.header().layers == f.hdr.layers);
  REQUIRE(r.header().provenance.size() == 1);
  CHECK(r.header().provenance[0].find("\"finished\"") != std::string::npos);

  for (std::size_t bs : {1u, 4u, 23u, 100u}) {
    auto src = r.batches(bs);
    std::size_t seen = 0;
    while (auto b = src.next()) {
      REQUIRE(b->first_row == seen);
      REQUIRE(b->rows() == std::min<std::size_t>(bs, 23 - seen));
      for (std::size_t i = 0; i < b->rows(); ++i) {
        const std::size_t row = seen + i;
        CHECK(b->ids[i] == f.ids[row]);
        CHECK(b->labels[i] == f.labels[row]);
        CHECK(b->data[0](i, 1, 2, 3) == f.conv[row * 24 + 1 * 12 + 2 * 4 + 3]);
        CHECK(b->data[1](i, 4) == f.fc[row * 5 + 4]);
      }
      seen += b->rows();
    }
    CHECK(seen == 23);
  }
  SECTION("a subset of layers") {
    auto src = r.batches(10, {1});
    auto b = src.next();
    REQUIRE(b->data.size() == 1);
    CHECK(b->data[0].shape() == std::vector<std::size_t>{10, 5});
    CHECK(src.header().layers.size() == 1);
  }
  SECTION("reading past the end is refused") { CHECK_THROWS_AS(r.read(0, 20, 4), std::out_of_range); }
}

TEST_CASE("store: datasets are chunked along rows and extensible", "[io][store]") {
  tmpdir t;
  const rows_fixture f(3);
  io::store_options opt;
  opt.chunk_rows = 2;
  io::store_writer w(t / "c.h5", f.hdr, opt);
  f.write(w, 0, 3, 3);
  w.finish();
  hid_t file = H5Fopen((t / "c.h5").c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  hid_t d = H5Dopen2(file, "/activations/conv.0", H5P_DEFAULT);
  hid_t dcpl = H5Dget_create_plist(d);
  hsize_t chunk[4] = {};
  REQUIRE(H5Pget_chunk(dcpl, 4, chunk) == 4);
  CHECK(chunk[0] == 2);
  CHECK(chunk[1] == 2);
  hid_t space = H5Dget_space(d);
  hsize_t dims[4], maxdims[4];
  H5Sget_simple_extent_dims(space, dims, maxdims);
  CHECK(dims[0] == 3);
  CHECK(maxdims[0] == H5S_UNLIMITED);
  H5Sclose(space);
  H5Pclose(dcpl);
  H5Dclose(d);
  H5Fclose(file);
  CHECK(io::detail::auto_chunk_rows(4 * 64 * 112 * 112, 0) == 1);    // rows over 2 MiB: one per chunk
  CHECK(io::detail::auto_chunk_rows(4 * 10, 0) == 4096);              // tiny rows: capped
  CHECK(io::detail::auto_chunk_rows(4 * 256 * 14 * 14, 0) == 10);     // ~2 MiB chunks
  CHECK(io::detail::auto_chunk_rows(4 * 256 * 14 * 14, 0, 16) == 8);  // ... dividing a batch of 16
  CHECK(io::detail::auto_chunk_rows(4 * 256 * 14 * 14, 0, 7) == 7);
  CHECK(io::detail::auto_chunk_rows(4 * 10, 0, 100) == 100);
}

TEST_CASE("store: a killed writer leaves only a partial file, and resume continues it", "[io][store]") {
  tmpdir t;
  const rows_fixture f(17);
  io::store_options opt;
  opt.resume_key = "model=abc";
  {
    io::store_writer w(t / "r.h5", f.hdr, opt);
    f.write(w, 0, 9, 3);
  }  // destroyed without finish(): as if killed after a whole batch
  REQUIRE_FALSE(std::filesystem::exists(t / "r.h5"));
  REQUIRE(std::filesystem::exists(t / "r.h5.partial"));
  CHECK_THROWS_WITH(io::store_reader(t / "r.h5.partial"), Catch::Contains("incomplete store"));
  CHECK(io::store_reader(t / "r.h5.partial", true).rows() == 9);

  SECTION("other settings are refused") {
    io::store_options other = opt;
    other.resume_key = "model=xyz";
    CHECK_THROWS_WITH(io::store_writer::resume(t / "r.h5", f.hdr, other), Catch::Contains("other settings"));
  }
  SECTION("resume equals one pass") {
    auto w = io::store_writer::resume(t / "r.h5", f.hdr, opt);
    REQUIRE(w);
    REQUIRE(w->rows() == 9);
    f.write(*w, 9, 8, 4);
    w->finish();
    io::store_reader r(t / "r.h5");
    REQUIRE(r.rows() == 17);
    const auto b = r.read_batch(0, 17, {0, 1});
    CHECK(b.ids == f.ids);
    CHECK(std::equal(f.conv.begin(), f.conv.end(), b.data[0].begin()));
    CHECK(std::equal(f.fc.begin(), f.fc.end(), b.data[1].begin()));
  }
  SECTION("rows written to some datasets but not all are cut back") {
    {
      hid_t file = H5Fopen((t / "r.h5.partial").c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
      hid_t d = H5Dopen2(file, "/activations/fc", H5P_DEFAULT);
      hsize_t dims[2] = {11, 5};  // as if killed between two datasets' appends
      H5Dset_extent(d, dims);
      H5Dclose(d);
      H5Fclose(file);
    }
    auto w = io::store_writer::resume(t / "r.h5", f.hdr, opt);
    CHECK(w->rows() == 9);
  }
  SECTION("no partial file: nothing to resume") { CHECK_FALSE(io::store_writer::resume(t / "none.h5", f.hdr, opt)); }
  SECTION("a partial file that does not open") {
    std::ofstream(t / "r.h5.partial", std::ios::trunc) << "garbage";
    CHECK_THROWS_AS(io::store_writer::resume(t / "r.h5", f.hdr, opt), io::unreadable_partial);
  }
}

TEST_CASE("store: bad files give one clear error naming the file", "[io][store]") {
  tmpdir t;
  SECTION("missing") { CHECK_THROWS_WITH(io::store_reader(t / "no.h5"), Catch::Contains("no.h5") && Catch::Contains("no such file")); }
  SECTION("not HDF5") {
    std::ofstream(t / "x.h5") << "hello, world";
    CHECK_THROWS_WITH(io::store_reader(t / "x.h5"), Catch::Contains("not an HDF5 file"));
  }
  SECTION("HDF5, but not ours") {
    H5Fclose(H5Fcreate((t / "other.h5").c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
    CHECK_THROWS_WITH(io::store_reader(t / "other.h5"), Catch::Contains("not a shapebias store"));
  }
  SECTION("truncated") {
    const rows_fixture f(40);
    io::store_writer w(t / "full.h5", f.hdr);
    f.write(w, 0, 40, 8);
    w.finish();
    const auto size = std::filesystem::file_size(t / "full.h5");
    std::filesystem::copy_file(t / "full.h5", t / "cut.h5");
    std::filesystem::resize_file(t / "cut.h5", size / 2);
    CHECK_THROWS_WITH(io::store_reader(t / "cut.h5"), Catch::Contains("cut.h5"));
  }
  SECTION("a layer name that cannot be a dataset") {
    io::header h{{{"a/b", {1}}}, {}};
    CHECK_THROWS_AS(io::store_writer(t / "n.h5", h), std::invalid_argument);
  }
}
