#pragma once
// Abseil 20220623 (Debian 12) has no public ASSIGN_OR_RETURN; these are the usual ten lines, prefixed.
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define CMN_CONCAT_INNER_(a, b) a##b
#define CMN_CONCAT_(a, b) CMN_CONCAT_INNER_(a, b)

#define CMN_RETURN_IF_ERROR(expr)                                         \
  do {                                                                    \
    if (absl::Status cmn_status_ = (expr); !cmn_status_.ok()) return cmn_status_; \
  } while (false)

#define CMN_ASSIGN_OR_RETURN(lhs, expr) CMN_ASSIGN_OR_RETURN_IMPL_(CMN_CONCAT_(cmn_so_, __LINE__), lhs, expr)
#define CMN_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return std::move(tmp).status();   \
  lhs = std::move(tmp).value()
