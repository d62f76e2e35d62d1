// cmn-pacs: reports every new stable study of an Orthanc server and stores the SR back into it.
//   cmn-pacs --orthanc http://127.0.0.1:8042 --server 127.0.0.1:50051 --state /var/lib/cmn-pacs/state.json
//            --store dicom --dicom-host 127.0.0.1 --dicom-port 4242 --called-ae ORTHANC --calling-ae CMN
//   cmn-pacs ... --store stow --stow-url http://127.0.0.1:8042/dicom-web
//   cmn-pacs ... --bundle bundles/iu_xray --threads 4      (the model in process, no cmn-server)
//   cmn-pacs ... --fhir-url http://127.0.0.1:8080/fhir      (also POST a FHIR R4 DiagnosticReport per study)
// Exit codes: 0 stopped by SIGTERM/SIGINT; 1 bad state file or settings; 2 bad command line.

#include <atomic>
#include <iostream>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>
#include <glog/logging.h>

#include "cmn/common/main_init.h"
#include "cmn/pacs/pacs_loop.h"

int main(int argc, char** argv) {
  const cmn::StopSignals stop_signals;  // before any thread: only stop_signals.wait() sees SIGTERM/SIGINT
  cmn::init_logging(argv[0]);

  cmn::pacs::PacsOptions o;
  CLI::App app{"cmn-pacs: a draft report SR for every new stable study of an Orthanc server"};
  app.add_option("--orthanc", o.orthanc_url, "Orthanc REST base URL")->capture_default_str();
  app.add_option("--orthanc-user", o.orthanc_user, "Orthanc HTTP basic auth user");
  app.add_option("--orthanc-password", o.orthanc_password, "Orthanc HTTP basic auth password");
  app.add_option("--server", o.server, "cmn-server gRPC address")->capture_default_str();
  app.add_option("--server-token", o.server_token, "bearer token for cmn-server");
  app.add_option("--bundle", o.bundle, "run this model bundle inside cmn-pacs instead of calling --server");
  app.add_option("--threads", o.threads, "--bundle: LibTorch threads (0 = one per core)")->capture_default_str();
  app.add_option("--sr-uid-root", o.sr.uid_root, "--bundle: UID root of the SR's series/instance (\"\" = 2.25 UUIDs)");
  app.add_option("--deadline-s", o.server_deadline_s, "GenerateReport deadline per study")->capture_default_str();
  app.add_option("--state", o.state_file, "state file (change cursor, reported and pending studies)")
      ->capture_default_str();
  app.add_option("--poll-s", o.poll_interval_s, "pause between change-feed polls when idle")->capture_default_str();
  app.add_option("--store", o.store, "how the SR goes back: dicom (C-STORE) | stow (STOW-RS)")
      ->check(CLI::IsMember({"dicom", "stow"}))
      ->capture_default_str();
  app.add_option("--dicom-host", o.dicom.host, "C-STORE: PACS host")->capture_default_str();
  app.add_option("--dicom-port", o.dicom.port, "C-STORE: PACS DICOM port")->capture_default_str();
  app.add_option("--called-ae", o.dicom.called_ae, "C-STORE: PACS AE title")->capture_default_str();
  app.add_option("--calling-ae", o.dicom.calling_ae, "C-STORE: our AE title")->capture_default_str();
  app.add_option("--dicom-timeout-s", o.dicom.dimse_timeout_s, "C-STORE: response timeout")->capture_default_str();
  app.add_option("--stow-url", o.stow.base_url, "STOW-RS: DICOMweb base URL (e.g. http://127.0.0.1:8042/dicom-web)");
  app.add_option("--fhir-url", o.fhir.base_url,
                 "FHIR server base URL: after the SR, POST the report as a DiagnosticReport to URL/DiagnosticReport");
  app.add_option("--fhir-token", o.fhir.bearer_token, "FHIR: bearer token");
  app.add_option("--max-attempts", o.max_attempts, "attempts per study before it is reported failed")
      ->capture_default_str();
  app.add_option("--retry-initial-s", o.retry_initial_s, "first back-off after a failed study")->capture_default_str();
  app.add_option("--retry-max-s", o.retry_max_s, "longest back-off")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (!o.fhir.base_url.empty() && o.fhir.base_url.rfind("http://", 0) != 0) {
    std::cerr << "cmn-pacs: --fhir-url must be an http:// URL (https is not built in)\n";
    return 2;
  }
  if (o.store == "stow" && o.stow.base_url.empty()) {
    std::cerr << "cmn-pacs: --store stow needs --stow-url\n";
    return 2;
  }

  cmn::pacs::PacsLoop loop(o);
  if (absl::Status s = loop.init(); !s.ok()) {
    LOG(ERROR) << "cmn-pacs: " << s.message();
    return 1;
  }
  std::atomic<bool> stop{false};
  std::thread waiter([&] {
    stop_signals.wait();
    stop.store(true);
  });
  std::cout << "cmn-pacs watching " << o.orthanc_url << std::endl;
  loop.run(stop);
  waiter.join();
  LOG(INFO) << "cmn-pacs: stopped";
  return 0;
}
