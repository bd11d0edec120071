// ProgressBackoff's idle policy: only the parts that do not depend on how long the test thread
// runs between calls (a busy machine may stop it for longer than the spin).
#include "runtime/progress_backoff.h"

#include <gtest/gtest.h>

namespace sepal {
namespace {

using std::chrono::microseconds;

TEST(ProgressBackoff, TheFirstIdlePassAfterWorkKeepsPolling) {
  ProgressBackoff backoff;
  backoff.busy();
  EXPECT_TRUE(backoff.keep_polling());  // the idle stretch starts at this call
}

TEST(ProgressBackoff, AHandOffEndsTheSpinAtOnce) {
  ProgressBackoff backoff;
  backoff.busy();
  backoff.handed_off();
  EXPECT_FALSE(backoff.keep_polling());
  EXPECT_FALSE(backoff.keep_polling());
  // The shortest sleep first, for a transport that cannot wait for an event.
  EXPECT_GE(backoff.sleep_step(), microseconds(20));
  EXPECT_LE(backoff.sleep_step(), microseconds(500));
}

TEST(ProgressBackoff, WorkAfterAHandOffSpinsAgain) {
  ProgressBackoff backoff;
  backoff.handed_off();
  backoff.busy();
  EXPECT_EQ(backoff.sleep_step(), microseconds(0));
  EXPECT_TRUE(backoff.keep_polling());
}

}  // namespace
}  // namespace sepal
