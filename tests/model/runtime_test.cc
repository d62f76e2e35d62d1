#include <sched.h>

#include <thread>

#include <gtest/gtest.h>

#include "cmn/model/runtime.h"

namespace cmn::model {
namespace {

// scripts/setup.sh points libblas.so.3 at OpenBLAS; a machine set up otherwise must fail here, loudly.
TEST(Runtime, LibTorchCallsOpenBlas) {
  const BlasInfo info = active_blas();
  EXPECT_FALSE(info.library.empty()) << "no sgemm_ found in the process";
  EXPECT_TRUE(info.openblas) << "sgemm_ comes from " << info.library;
  EXPECT_TRUE(warn_if_slow_blas());
}

TEST(Runtime, CgroupCpuMaxGivesWholeCpus) {
  EXPECT_EQ(cpus_from_cgroup_cpu_max("200000 100000"), 2);
  EXPECT_EQ(cpus_from_cgroup_cpu_max("150000 100000\n"), 2);  // 1.5 CPUs of quota: 2 threads
  EXPECT_EQ(cpus_from_cgroup_cpu_max("50000 100000"), 1);
  EXPECT_EQ(cpus_from_cgroup_cpu_max("max 100000"), 0);       // no limit
  EXPECT_EQ(cpus_from_cgroup_cpu_max(""), 0);
  EXPECT_EQ(cpus_from_cgroup_cpu_max("lots 100000"), 0);
  EXPECT_EQ(cpus_from_cgroup_cpu_max("100000 0"), 0);
}

// A thread pinned to one CPU (as taskset or a cpuset would) has a budget of 1, whatever the host has.
TEST(Runtime, CpuBudgetFollowsTheAffinityMask) {
  EXPECT_GE(cpu_budget(), 1);
  EXPECT_LE(cpu_budget(), static_cast<int>(std::thread::hardware_concurrency()));
  int pinned = -1;
  std::thread worker([&] {
    cpu_set_t one;
    CPU_ZERO(&one);
    cpu_set_t mine;
    ASSERT_EQ(sched_getaffinity(0, sizeof(mine), &mine), 0);
    for (int c = 0; c < CPU_SETSIZE; ++c) {
      if (CPU_ISSET(c, &mine)) {
        CPU_SET(c, &one);
        break;
      }
    }
    ASSERT_EQ(sched_setaffinity(0, sizeof(one), &one), 0);
    pinned = cpu_budget();
  });
  worker.join();
  EXPECT_EQ(pinned, 1);
}

}  // namespace
}  // namespace cmn::model
