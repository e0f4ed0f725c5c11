// SPDX-License-Identifier: MIT
// Tests for tools/common/suggest.hpp.
#include "common/suggest.hpp"

#include <catch2/catch.hpp>

using namespace shapebias::tools;

TEST_CASE("suggest: edit distance on hand-worked cases", "[tools][suggest]") {
  CHECK(edit_distance("", "") == 0);
  CHECK(edit_distance("abc", "") == 3);
  CHECK(edit_distance("kitten", "sitting") == 3);
  CHECK(edit_distance("layer3.5.conv2", "layer3.5.conv1") == 1);
  CHECK(edit_distance("features.11", "features.1") == 1);
}

TEST_CASE("suggest: the closest names come first", "[tools][suggest]") {
  const std::vector<std::string> names{"conv1", "layer1", "layer2", "layer3.5.conv2", "fc"};
  CHECK(closest("layer3.5.conv", names, 1) == std::vector<std::string>{"layer3.5.conv2"});
  CHECK(closest("layr1", names, 2) == std::vector<std::string>{"layer1", "layer2"});
  const auto msg = unknown_name_message("layer", "layr1", "'m.pt'", names);
  CHECK(msg == "unknown layer 'layr1' in 'm.pt'; closest: 'layer1', 'layer2', 'conv1'");
}
