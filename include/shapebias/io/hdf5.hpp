// SPDX-License-Identifier: MIT
// Small RAII handles over the HDF5 C API, and the boundary that turns HDF5 error stacks into one
// shapebias::io_error naming the file and object.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "shapebias/core/errors.hpp"

namespace shapebias::io::h5 {

/// Owns one HDF5 identifier and closes it with the right H5?close.
class handle {
 public:
  handle() = default;
  explicit handle(hid_t id) : id_(id) {}
  handle(const handle&) = delete;
  handle& operator=(const handle&) = delete;
  handle(handle&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)) {}
  handle& operator=(handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, H5I_INVALID_HID);
    }
    return *this;
  }
  ~handle() { reset(); }

  hid_t get() const noexcept { return id_; }
  explicit operator bool() const noexcept { return id_ >= 0; }

  void reset() noexcept {
    if (id_ < 0) return;
    switch (H5Iget_type(id_)) {
      case H5I_FILE: H5Fclose(id_); break;
      case H5I_GROUP: H5Gclose(id_); break;
      case H5I_DATASET: H5Dclose(id_); break;
      case H5I_DATASPACE: H5Sclose(id_); break;
      case H5I_DATATYPE: H5Tclose(id_); break;
      case H5I_ATTR: H5Aclose(id_); break;
      case H5I_GENPROP_LST: H5Pclose(id_); break;
      default: break;
    }
    id_ = H5I_INVALID_HID;
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
};

namespace detail {
inline herr_t innermost(unsigned n, const H5E_error2_t* e, void* out) {
  // Walked upward, frame 0 is the innermost one, where the cause (e.g. errno) is said.
  if (n == 0 && e->desc) *static_cast<std::string*>(out) = e->desc;
  return 0;
}
}  // namespace detail

/// Silences HDF5's own printing of error stacks; errors reach the caller as exceptions instead.
inline void quiet() {
  static const bool done = [] {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    return true;
  }();
  (void)done;
}

/// Throws io_error("<file>: <what>: <HDF5's innermost message>") when id/status is negative.
template <class T>
T check(T status, const std::string& file, const std::string& what) {
  if (status >= 0) return status;
  std::string why;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, detail::innermost, &why);
  H5Eclear2(H5E_DEFAULT);
  throw io_error(quote_name(file) + ": " + what + (why.empty() ? "" : ": " + why));
}

inline bool exists(hid_t loc, const std::string& path) {
  // H5Lexists fails on a missing intermediate group; walk the path one component at a time.
  std::size_t pos = 0;
  while (true) {
    pos = path.find('/', pos + 1);
    const std::string part = path.substr(0, pos);
    if (!part.empty() && part != "/" && H5Lexists(loc, part.c_str(), H5P_DEFAULT) <= 0) return false;
    if (pos == std::string::npos) return true;
  }
}

inline bool has_attribute(hid_t obj, const std::string& name) {
  return H5Aexists(obj, name.c_str()) > 0;
}

inline void write_attribute(hid_t obj, const std::string& name, const std::string& value,
                            const std::string& file) {
  if (has_attribute(obj, name)) H5Adelete(obj, name.c_str());
  handle type(H5Tcopy(H5T_C_S1));
  H5Tset_size(type.get(), H5T_VARIABLE);
  H5Tset_cset(type.get(), H5T_CSET_UTF8);
  handle space(H5Screate(H5S_SCALAR));
  handle attr(check(H5Acreate2(obj, name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT),
                    file, "cannot create attribute '" + name + "'"));
  const char* p = value.c_str();
  check(H5Awrite(attr.get(), type.get(), &p), file, "cannot write attribute '" + name + "'");
}

inline void write_attribute(hid_t obj, const std::string& name, std::int64_t value,
                            const std::string& file) {
  if (has_attribute(obj, name)) H5Adelete(obj, name.c_str());
  handle space(H5Screate(H5S_SCALAR));
  handle attr(check(H5Acreate2(obj, name.c_str(), H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                    file, "cannot create attribute '" + name + "'"));
  check(H5Awrite(attr.get(), H5T_NATIVE_INT64, &value), file, "cannot write attribute '" + name + "'");
}

inline void write_attribute(hid_t obj, const std::string& name, double value, const std::string& file) {
  if (has_attribute(obj, name)) H5Adelete(obj, name.c_str());
  handle space(H5Screate(H5S_SCALAR));
  handle attr(check(H5Acreate2(obj, name.c_str(), H5T_IEEE_F64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                    file, "cannot create attribute '" + name + "'"));
  check(H5Awrite(attr.get(), H5T_NATIVE_DOUBLE, &value), file, "cannot write attribute '" + name + "'");
}

inline std::string read_string_attribute(hid_t obj, const std::string& name, const std::string& file) {
  handle attr(check(H5Aopen(obj, name.c_str(), H5P_DEFAULT), file,
                    "missing attribute '" + name + "'"));
  handle ftype(H5Aget_type(attr.get()));
  if (H5Tget_class(ftype.get()) != H5T_STRING)
    throw io_error(quote_name(file) + ": attribute '" + name + "' is not a string");
  if (H5Tis_variable_str(ftype.get()) > 0) {
    handle mtype(H5Tcopy(H5T_C_S1));
    H5Tset_size(mtype.get(), H5T_VARIABLE);
    H5Tset_cset(mtype.get(), H5Tget_cset(ftype.get()));  // HDF5 does not convert ASCII <-> UTF-8
    char* p = nullptr;
    check(H5Aread(attr.get(), mtype.get(), &p), file, "cannot read attribute '" + name + "'");
    std::string out = p ? p : "";
    handle space(H5Aget_space(attr.get()));
    H5Dvlen_reclaim(mtype.get(), space.get(), H5P_DEFAULT, &p);
    return out;
  }
  std::string out(H5Tget_size(ftype.get()), '\0');
  check(H5Aread(attr.get(), ftype.get(), out.data()), file, "cannot read attribute '" + name + "'");
  return out.substr(0, out.find('\0'));
}

inline std::int64_t read_int_attribute(hid_t obj, const std::string& name, const std::string& file) {
  handle attr(check(H5Aopen(obj, name.c_str(), H5P_DEFAULT), file,
                    "missing attribute '" + name + "'"));
  std::int64_t v = 0;
  check(H5Aread(attr.get(), H5T_NATIVE_INT64, &v), file, "cannot read attribute '" + name + "'");
  return v;
}

/// The dimensions of a dataset.
inline std::vector<hsize_t> dims(hid_t dset) {
  handle space(H5Dget_space(dset));
  std::vector<hsize_t> d(static_cast<std::size_t>(H5Sget_simple_extent_ndims(space.get())));
  H5Sget_simple_extent_dims(space.get(), d.data(), nullptr);
  return d;
}

}  // namespace shapebias::io::h5
