// meap/dist/agreement.hpp: how the ranks of a run agree on what only rank 0 decides (whether an
// output directory can be used, which checkpoint to resume, whether a checkpoint was written):
// rank 0 decides, every rank learns the outcome, and a failure on rank 0 becomes an error on every
// rank, so that no rank waits in a collective for one that stopped. The trainer's distributed save
// and the run layer (run/run_directory.hpp) both use it.
#pragma once

#include <meap/core/error.hpp>
#include <meap/dist/process_group.hpp>

#include <exception>
#include <functional>
#include <string>
#include <string_view>
#include <utility>

namespace meap::dist {

class rank0_agreement {
 public:
  // One process: this rank leads and nothing is shared.
  rank0_agreement() = default;
  // The ranks of `group` (nullptr: one process). The group must outlive the agreement.
  template <class Device>
  explicit rank0_agreement(process_group<Device>* group) {
    if (group == nullptr) return;
    lead_ = group->rank() == 0;
    share_ = [group](std::string& text) { group->broadcast_host(text, 0); };
  }

  bool lead() const noexcept { return lead_; }
  bool distributed() const noexcept { return static_cast<bool>(share_); }

  // Runs `decide` on rank 0 and returns its text on every rank. When it throws there, rank 0
  // rethrows its own error and every other rank throws meap::error("<others_message>: <what>").
  // Every rank must call agree, in the same order (it is a collective).
  std::string agree(const std::function<std::string()>& decide,
                    std::string_view others_message = "rank 0 stopped the run") const {
    if (!share_) return decide();
    std::string text;
    std::exception_ptr failure;
    if (lead_) {
      try {
        text = "ok:" + decide();
      } catch (const std::exception& e) {
        failure = std::current_exception();
        const std::string what = e.what();
        text = "error:" + (what.empty() ? std::string("unknown error") : what);
      }
    }
    share_(text);
    if (failure) std::rethrow_exception(failure);
    if (text.rfind("error:", 0) == 0) throw error(std::string(others_message) + ": " + text.substr(6));
    if (text.rfind("ok:", 0) != 0)
      throw error(std::string(others_message) + ": rank 0 sent no decision (a mismatched collective?)");
    return text.substr(3);
  }

 private:
  bool lead_ = true;
  std::function<void(std::string&)> share_{};
};

}  // namespace meap::dist
