// SPDX-License-Identifier: MIT
// Accumulator states (shapebias/stats/state.hpp) in HDF5: one group per state, with the kind and
// the parameters as attributes (numbers as float64, choices as strings) and each array as a
// float64 dataset. Readable by h5py with no knowledge of this project.
#pragma once

#include <xtensor/xarray.hpp>
#include <xtensor/xbuilder.hpp>

#include <string>
#include <vector>

#include "shapebias/io/hdf5.hpp"
#include "shapebias/stats/state.hpp"

namespace shapebias::io {

/// Writes `s` as the group `path` under `loc` (intermediate groups are created). `file` names the
/// file in error messages. Parameters and choices are attributes of one namespace: a name that is
/// both is refused (std::invalid_argument), as it could not be read back.
inline void write_state(hid_t loc, const std::string& path, const stats::state& s, const std::string& file) {
  for (const auto& [k, v] : s.text)
    if (s.params.count(k) || k == "kind" || k == "state_format_version")
      throw std::invalid_argument(s.kind + " state: '" + k + "' is both a choice and a parameter or reserved name");
  h5::quiet();
  h5::handle lcpl(H5Pcreate(H5P_LINK_CREATE));
  H5Pset_create_intermediate_group(lcpl.get(), 1);
  h5::handle g(h5::check(H5Gcreate2(loc, path.c_str(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT), file,
                         "cannot create group '" + path + "'"));
  h5::write_attribute(g.get(), "kind", s.kind, file);
  h5::write_attribute(g.get(), "state_format_version", std::int64_t{1}, file);
  for (const auto& [k, v] : s.params) h5::write_attribute(g.get(), k, v, file);
  for (const auto& [k, v] : s.text) h5::write_attribute(g.get(), k, v, file);
  for (const auto& [name, a] : s.arrays) {
    std::vector<hsize_t> dims(a.shape().begin(), a.shape().end());
    h5::handle space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
    h5::handle d(h5::check(H5Dcreate2(g.get(), name.c_str(), H5T_IEEE_F64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT,
                                      H5P_DEFAULT),
                           file, "cannot create dataset '" + path + "/" + name + "'"));
    const xt::xarray<double> c = a;  // row-major, contiguous
    h5::check(H5Dwrite(d.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, c.data()), file,
              "cannot write '" + path + "/" + name + "'");
  }
}

/// Reads the state written by write_state. Throws io_error naming the file and group.
inline stats::state read_state(hid_t loc, const std::string& path, const std::string& file) {
  h5::quiet();
  if (!h5::exists(loc, path)) throw io_error(quote_name(file) + ": no state '" + path + "'");
  h5::handle g(h5::check(H5Gopen2(loc, path.c_str(), H5P_DEFAULT), file, "cannot open group '" + path + "'"));
  stats::state s;
  s.kind = h5::read_string_attribute(g.get(), "kind", file);
  if (h5::read_int_attribute(g.get(), "state_format_version", file) != 1)
    throw io_error(quote_name(file) + ": state '" + path + "' has a format version this build does not read");
  std::vector<std::string> attrs;
  auto on_attr = [](hid_t, const char* name, const H5A_info_t*, void* data) -> herr_t {
    static_cast<std::vector<std::string>*>(data)->push_back(name);
    return 0;
  };
  h5::check(H5Aiterate2(g.get(), H5_INDEX_NAME, H5_ITER_INC, nullptr, on_attr, &attrs), file,
            "cannot list the attributes of '" + path + "'");
  for (const auto& n : attrs) {
    if (n == "kind" || n == "state_format_version") continue;
    h5::handle attr(h5::check(H5Aopen(g.get(), n.c_str(), H5P_DEFAULT), file, "cannot open attribute '" + n + "'"));
    h5::handle type(H5Aget_type(attr.get()));
    h5::handle space(H5Aget_space(attr.get()));
    if (H5Sget_simple_extent_npoints(space.get()) != 1)
      throw io_error(quote_name(file) + ": state '" + path + "' attribute '" + n + "' is not a single value");
    if (H5Tget_class(type.get()) == H5T_STRING) {
      s.text[n] = h5::read_string_attribute(g.get(), n, file);
    } else {
      double v = 0;
      h5::check(H5Aread(attr.get(), H5T_NATIVE_DOUBLE, &v), file, "cannot read attribute '" + n + "'");
      s.params[n] = v;
    }
  }
  std::vector<std::string> names;
  auto on_link = [](hid_t, const char* name, const H5L_info_t*, void* data) -> herr_t {
    static_cast<std::vector<std::string>*>(data)->push_back(name);
    return 0;
  };
  h5::check(H5Literate(g.get(), H5_INDEX_NAME, H5_ITER_INC, nullptr, on_link, &names), file,
            "cannot list '" + path + "'");
  for (const auto& name : names) {
    h5::handle d(h5::check(H5Dopen2(g.get(), name.c_str(), H5P_DEFAULT), file,
                           "cannot open '" + path + "/" + name + "'"));
    const auto dims = h5::dims(d.get());
    std::vector<std::size_t> shape(dims.begin(), dims.end());
    xt::xarray<double> a = xt::zeros<double>(shape);
    h5::check(H5Dread(d.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, a.data()), file,
              "cannot read '" + path + "/" + name + "'");
    s.arrays[name] = std::move(a);
  }
  return s;
}

}  // namespace shapebias::io
