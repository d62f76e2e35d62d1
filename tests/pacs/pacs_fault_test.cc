// Faults (issue 13): Orthanc crashes and restarts while cmn-pacs is storing an SR. Every part is a real process
// (pacs_e2e_fixture.h). The crash is placed deterministically, not by timing: an Orthanc Lua filter
// (ReceivedInstanceFilter, which runs before Orthanc stores an incoming instance) holds the first incoming SR
// while a flag file exists and says so with a second file. Orthanc is then killed with SIGKILL in the middle of
// that C-STORE and started again on the same storage and ports, without the hold. cmn-pacs must retry, and
// every study must end with exactly one SR: the lost store is redone, nothing is stored twice.
#include <signal.h>

#include <chrono>
#include <set>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "pacs/pacs_e2e_fixture.h"

namespace cmn::pacs::testing {
namespace {

class PacsFaultTest : public PacsEndToEndTest {};

// Orthanc's Lua: an incoming SR waits (Orthanc's Lua context is single-threaded: so does every later store)
// while <dir>/hold exists, after writing <dir>/holding.
std::string hold_script(const std::string& dir) {
  return "function ReceivedInstanceFilter(dicom, origin, info)\n"
         "  if dicom.Modality == 'SR' and io.open('" + dir + "/hold', 'r') ~= nil then\n"
         "    local f = io.open('" + dir + "/holding', 'w'); f:write('1'); f:close()\n"
         "    while io.open('" + dir + "/hold', 'r') ~= nil do os.execute('sleep 0.1') end\n"
         "  end\n"
         "  return true\n"
         "end\n";
}

TEST_F(PacsFaultTest, OrthancKilledMidStoreAndRestartedEveryStudyGetsExactlyOneSr) {
  const auto start = Clock::now();
  write_bytes(dir_->file("hold.lua"), hold_script(dir_->path()));
  write_bytes(dir_->file("hold"), "");
  orthanc_.lua_scripts = {dir_->file("hold.lua")};
  ASSERT_TRUE(orthanc_.start()) << "Orthanc did not start:\n" << read_bytes(dir_->file("orthanc.err"));
  const int server_port = start_server();
  ASSERT_GT(server_port, 0) << "cmn-server did not start:\n" << (server_ ? server_->err() : "");

  // Everything is uploaded before cmn-pacs starts: once an SR is held, Orthanc's Lua lock would hold uploads too.
  std::set<std::string> uploaded, study_uids;
  for (const auto& entry : fs::directory_iterator(shared_path("data/dicom/chest"))) {
    if (entry.path().extension() != ".dcm") continue;
    uploaded.insert(upload(entry.path().string()));
    auto info = preprocessing::read_dicom_info(read_bytes(entry.path().string()), entry.path().string());
    if (info.ok()) study_uids.insert(info->study_instance_uid);
  }
  ASSERT_GE(study_uids.size(), 3u);
  // Every study stable first: Orthanc tracks "not yet stable" in memory, and whether a study still settling at a
  // crash is announced after the restart is a different fault from this test's (a store cut off mid-way).
  ASSERT_TRUE(wait_for(std::chrono::seconds(240), [&] {
    const json studies = orthanc_.get("/studies");
    if (!studies.is_array() || studies.size() != study_uids.size()) return false;
    for (const auto& s : studies) {
      if (!orthanc_.get("/studies/" + s.get<std::string>()).value("IsStable", false)) return false;
    }
    return true;
  }));
  start_pacs(server_port);

  // 1. cmn-pacs has a report and is inside its C-STORE: Orthanc holds the SR before storing it.
  ASSERT_TRUE(wait_for(std::chrono::seconds(180), [&] { return fs::exists(dir_->file("holding")); }))
      << "no SR reached Orthanc\n" << diagnostics();
  json studies = orthanc_.get("/studies");
  ASSERT_TRUE(studies.is_array());
  for (const auto& s : studies) {
    EXPECT_TRUE(orthanc_.sr_instances(s.get<std::string>()).empty()) << "an SR was stored while the hold was on";
  }

  // 2. Crash and restart: same storage, same ports, no hold.
  ASSERT_TRUE(orthanc_.crash()) << "Orthanc's ports were still held a minute after it was killed";
  fs::remove(dir_->file("hold"));
  ASSERT_TRUE(orthanc_.start()) << "Orthanc did not restart:\n" << read_bytes(dir_->file("orthanc.err"));

  // 3. Every study gets its SR, and cmn-pacs settles: nothing pending or failed, every change Orthanc logged
  //    (including each study becoming stable again after its SR arrived) read, every study stable. Only then
  //    is "exactly one" final: no later pass can add a second SR.
  const bool settled = pacs_settled(std::chrono::seconds(240), [&] {
    studies = orthanc_.get("/studies");
    if (!studies.is_array() || studies.size() != study_uids.size()) return false;
    for (const auto& s : studies) {
      if (orthanc_.sr_instances(s.get<std::string>()).empty()) return false;
    }
    return true;
  });
  ASSERT_TRUE(settled) << "cmn-pacs did not settle after the restart\n" << diagnostics();
  std::cout << "[ fault ] " << study_uids.size() << " studies reported across an Orthanc crash in "
            << std::chrono::duration<double>(Clock::now() - start).count() << " s" << std::endl;

  for (const auto& s : studies) expect_sr_matches_server(s.get<std::string>(), server_port, uploaded);
  pacs_->stop();
  auto state = load_state(dir_->file("pacs-state.json"));
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->done.size(), study_uids.size());
  EXPECT_TRUE(state->failed.empty());
}

// Orthanc remembers which studies are still settling only in memory: one that is settling when Orthanc crashes
// is never announced stable (no StableStudy change) after the restart. A StableAge of an hour keeps the study
// settling, deterministically, until the crash; the restarted Orthanc calls it stable at once. cmn-pacs must
// still report it, once.
TEST_F(PacsFaultTest, StudySettlingWhenOrthancCrashesIsStillReportedOnce) {
  orthanc_.stable_age_s = 3600;
  ASSERT_TRUE(orthanc_.start()) << "Orthanc did not start:\n" << read_bytes(dir_->file("orthanc.err"));
  const int server_port = start_server();
  ASSERT_GT(server_port, 0) << "cmn-server did not start:\n" << (server_ ? server_->err() : "");
  start_pacs(server_port);
  const std::string uploaded = upload(shared_path("data/dicom/chest/gdcm-CR-MONO1-10-chest_explicitLE.dcm"));
  json studies = orthanc_.get("/studies");
  ASSERT_TRUE(studies.is_array() && studies.size() == 1u);
  const std::string study = studies[0].get<std::string>();
  EXPECT_FALSE(orthanc_.get("/studies/" + study).value("IsStable", true));
  // cmn-pacs has read the whole change feed (the study's NewStudy included) before the crash.
  ASSERT_TRUE(wait_for(std::chrono::seconds(240), [&] {
    const json last = orthanc_.get("/changes?last");
    auto state = load_state(dir_->file("pacs-state.json"));
    return last.is_object() && state.ok() && state->last_change >= last.value("Last", int64_t{-1});
  })) << diagnostics();

  ASSERT_TRUE(orthanc_.crash()) << "Orthanc's ports were still held a minute after it was killed";
  orthanc_.stable_age_s = 1;
  ASSERT_TRUE(orthanc_.start()) << "Orthanc did not restart:\n" << read_bytes(dir_->file("orthanc.err"));
  ASSERT_TRUE(orthanc_.get("/studies/" + study).value("IsStable", false));

  // Reported, and settled: the SR's own arrival is announced and read, nothing pending, still one SR.
  ASSERT_TRUE(pacs_settled(std::chrono::seconds(120), [&] { return !orthanc_.sr_instances(study).empty(); }))
      << "the study that was settling at the crash was never reported\n" << diagnostics();
  expect_sr_matches_server(study, server_port, {uploaded});
  pacs_->stop();
  auto state = load_state(dir_->file("pacs-state.json"));
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->done.size(), 1u);
  EXPECT_TRUE(state->failed.empty());
}

}  // namespace
}  // namespace cmn::pacs::testing
