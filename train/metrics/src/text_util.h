#pragma once
// Python / numpy semantics the scorers depend on: str.split(), str.split(" "), numpy's float64 mean.
#include <string>
#include <string_view>
#include <vector>

namespace cmn::metrics::detail {

// str.split() with no separator on ASCII/UTF-8 text: runs of Python whitespace separate, no empty fields.
// Whitespace recognised: ASCII \t \n \v \f \r, 0x1C-0x1F, space, and in UTF-8 U+0085, U+00A0, U+1680,
// U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000 (Python's str.isspace()).
std::vector<std::string> py_split(std::string_view s);

// str.split(" "): keeps empty fields, always at least one ("" -> [""]).
std::vector<std::string> py_split_space(std::string_view s);

// numpy's pairwise summation of a float64 array (numpy/core/src/umath/loops_utils.h.src), the sum inside
// np.mean / np.sum of a contiguous 1-D array.
double numpy_pairwise_sum(const double* a, std::size_t n);
// np.mean(np.array(values)); NaN for an empty array, as numpy.
double numpy_mean(const std::vector<double>& values);

}  // namespace cmn::metrics::detail
