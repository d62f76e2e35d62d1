// Bearer tokens checked against a file of SHA-256 digests.
#include "cmn/server/auth.h"

#include <gtest/gtest.h>

#include "cmn/pipeline/bundle.h"

namespace cmn::server {
namespace {

std::multimap<grpc::string_ref, grpc::string_ref> metadata_with(const std::string& key, const std::string& value) {
  std::multimap<grpc::string_ref, grpc::string_ref> m;
  m.emplace(grpc::string_ref(key), grpc::string_ref(value));
  return m;
}

TEST(TokenAuthenticatorTest, AcceptsOnlyListedTokens) {
  const std::string text = "# tokens of the PACS integration\n" + pipeline::sha256_hex("s3cret-token") +
                           "  -\n\nsha256:" + pipeline::sha256_hex("other") + "\n";
  auto auth = TokenAuthenticator::from_text(text, "tokens.txt");
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_EQ(auth->size(), 2u);
  const std::string good = "Bearer s3cret-token", other = "bearer other", bad = "Bearer wrong";
  EXPECT_TRUE(auth->check(metadata_with("authorization", good)).ok());
  EXPECT_TRUE(auth->check(metadata_with("authorization", other)).ok());
  const absl::Status wrong = auth->check(metadata_with("authorization", bad));
  EXPECT_EQ(wrong.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(wrong.message().find("wrong"), std::string::npos) << "the token must not be echoed";
}

TEST(TokenAuthenticatorTest, MissingOrMalformedHeaderIsUnauthenticated) {
  auto auth = TokenAuthenticator::from_text(pipeline::sha256_hex("t"), "tokens.txt");
  ASSERT_TRUE(auth.ok());
  const std::string basic = "Basic dDp0", empty = "Bearer ", token_only = "t";
  EXPECT_EQ(auth->check({}).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth->check(metadata_with("authorization", basic)).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth->check(metadata_with("authorization", empty)).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth->check(metadata_with("authorization", token_only)).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth->check(metadata_with("x-token", token_only)).code(), absl::StatusCode::kUnauthenticated);
}

TEST(TokenAuthenticatorTest, RejectsFilesWithoutValidDigests) {
  auto plain = TokenAuthenticator::from_text("my-plain-token\n", "tokens.txt");
  ASSERT_FALSE(plain.ok());
  EXPECT_NE(plain.status().message().find("tokens.txt:1"), std::string::npos) << plain.status();
  EXPECT_FALSE(TokenAuthenticator::from_text("# nothing\n\n", "tokens.txt").ok());
  EXPECT_EQ(TokenAuthenticator::from_file("/nonexistent/tokens").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace cmn::server
