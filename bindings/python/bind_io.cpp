// SPDX-License-Identifier: MIT
// Stores and streams as Python iterators over batches (shapebias/io/endpoints.hpp), and the
// accumulator states that the tools save in their HDF5 outputs (shapebias/io/state.hpp).
#include "common.hpp"

#include <memory>
#include <optional>

#include "shapebias/io/endpoints.hpp"
#include "shapebias/io/state.hpp"

namespace shapebias::python {

using namespace pybind11::literals;

namespace {

/// One batch as numpy arrays that own the buffers the reader filled (nothing copied).
struct batch {
  std::uint64_t first_row = 0;
  py::array ids, labels;
  py::dict data;  // layer name → float32 [rows, ...]
};

/// An open store or stream. `keep` holds a file object read through /dev/fd/N while it is read.
class reader {
 public:
  reader(py::handle source, std::size_t batch_size, std::optional<std::vector<std::string>> layers, bool allow_incomplete) {
    std::string path;
    if (py::hasattr(source, "fileno") && !py::isinstance<py::str>(source)) {
      keep_ = py::reinterpret_borrow<py::object>(source);
      path = "/dev/fd/" + std::to_string(source.attr("fileno")().cast<int>());
    } else {
      path = py::module_::import("os").attr("fspath")(source).cast<std::string>();
    }
    const auto names = layers.value_or(std::vector<std::string>{});
    py::gil_scoped_release nogil;  // a stream's header may still be on its way through a pipe
    src_ = io::open_source(path, batch_size, allow_incomplete, names);
  }

  io::batch_source& source() const {
    if (!src_) throw py::value_error("the reader is closed");
    return *src_;
  }
  batch next() {
    std::optional<io::batch> b;
    {
      py::gil_scoped_release nogil;
      b = source().next();
    }
    if (!b) throw py::stop_iteration();
    batch out{b->first_row, to_numpy(std::move(b->ids)), to_numpy(std::move(b->labels)), {}};
    const auto& layers = source().header().layers;
    for (std::size_t i = 0; i < layers.size(); ++i) out.data[py::str(layers[i].name)] = to_numpy(std::move(b->data[i]));
    return out;
  }
  void close() {
    src_.reset();
    keep_ = py::none();
  }

 private:
  std::unique_ptr<io::batch_source> src_;
  py::object keep_ = py::none();
};

}  // namespace

void bind_io(py::module_& m) {
  py::class_<batch>(m, "Batch", "One batch of a store or stream: its arrays own their memory (no copy was made).")
      .def_readonly("first_row", &batch::first_row, "The row number of the batch's first input.")
      .def_readonly("ids", &batch::ids, "The inputs' ids (int64 [rows]).")
      .def_readonly("labels", &batch::labels, "The inputs' labels (int64 [rows]).")
      .def_readonly("data", &batch::data, "Per layer name, its activations (float32 [rows, ...]).")
      .def_property_readonly("rows", [](const batch& b) { return py::len(b.ids); })
      .def("__getitem__", [](const batch& b, const std::string& layer) -> py::object {
        if (!b.data.contains(layer)) throw py::key_error("no layer '" + layer + "' in this batch");
        return b.data[py::str(layer)];
      })
      .def("__repr__", [](const batch& b) {
        return "<shapebias.Batch of " + std::to_string(py::len(b.ids)) + " rows from row " + std::to_string(b.first_row) +
               ", layers " + std::string(py::str(py::list(b.data.attr("keys")()))) + ">";
      });

  py::class_<reader>(m, "Reader", R"(Batches of a store or stream in row order, as an iterator: open() makes one.
A stream cut short or damaged is an IOError, never a shorter result.)")
      .def(py::init<py::handle, std::size_t, std::optional<std::vector<std::string>>, bool>(), "source"_a,
           "batch_size"_a = 64, "layers"_a = py::none(), "allow_incomplete"_a = false)
      .def("__iter__", [](py::object self) { return self; })
      .def("__next__", &reader::next)
      .def("close", &reader::close, "Closes the input; the reader cannot be used afterwards.")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](reader& r, py::args) { r.close(); })
      .def_property_readonly("format", [](const reader& r) { return r.source().format(); },
                             "'shapebias-store v1' (with ' (incomplete)' when so) or 'shapebias-stream v1'.")
      .def_property_readonly("rows", [](const reader& r) { return r.source().known_rows(); },
                             "The number of rows of a store; None for a stream (known only at its end).")
      .def_property_readonly(
          "layers",
          [](const reader& r) {
            py::dict d;
            for (const auto& l : r.source().header().layers) d[py::str(l.name)] = py::tuple(py::cast(l.shape));
            return d;
          },
          "Per layer read, the shape of one row, e.g. {'features.3': (64, 14, 14)}, in the order of the batches.")
      .def_property_readonly(
          "provenance", [](const reader& r) { return r.source().header().provenance; },
          "The provenance log, one JSON text per processing step, oldest first (a stream's last step gets its "
          "'finished' time once the stream has been read to its end).");

  m.def("open", [](py::handle source, std::size_t batch_size, std::optional<std::vector<std::string>> layers,
                   bool allow_incomplete) { return reader(source, batch_size, std::move(layers), allow_incomplete); },
        "source"_a, "batch_size"_a = 64, "layers"_a = py::none(), "allow_incomplete"_a = false,
        R"(Opens a store or stream written by shapebias (`shapebias dump`, `attack`, `view`) for reading in batches:

  for b in shapebias.open("acts.h5", layers=["features.3"]):
      b.ids, b.labels, b["features.3"]        # int64 [rows], int64 [rows], float32 [rows, C, H, W]

source: a path (str or os.PathLike; "-" is standard input; a store or stream is recognised by its
first bytes), or a binary file object with fileno() (a pipe such as subprocess.Popen(...).stdout), read
from its descriptor: bytes already read into the object's own buffer are not seen. batch_size: rows per
batch of a store (a stream's batches are those it was written with). layers: the layers to read, in
that order (None: all). allow_incomplete: read a store whose writer did not finish. The GIL is released
while reading. Errors are shapebias.IOError (an OSError) naming the input.)");

  m.def(
      "read_state",
      [](const std::string& path, const std::string& group) {
        stats::state s;
        {
          py::gil_scoped_release nogil;
          io::h5::quiet();
          io::h5::handle f(io::h5::check(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), path, "cannot open HDF5 file"));
          s = io::read_state(f.get(), group, path);
        }
        return to_dict(std::move(s));
      },
      "path"_a, "group"_a,
      "The accumulator state saved in group `group` of the HDF5 file `path` by a shapebias tool (e.g. "
      "'<input>/<layer>/tv_clean' in `shapebias tv`'s tv.h5), as the dict that the classes' from_state() take.");
}

}  // namespace shapebias::python
