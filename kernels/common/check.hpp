// Argument checks for native kernels. Python validates every argument before
// dispatch; these are the last line of defence and they throw (pybind11 turns
// std::invalid_argument into ValueError), never exit or abort.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

#define PYDL_CHECK(cond, msg)                                                     \
  do {                                                                            \
    if (!(cond)) {                                                                \
      std::ostringstream pydl_check_os_;                                          \
      pydl_check_os_ << msg;                                                      \
      throw std::invalid_argument(pydl_check_os_.str());                          \
    }                                                                             \
  } while (0)
