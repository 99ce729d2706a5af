#include <framestage/stats.hpp>

#include <nlohmann/json.hpp>

namespace framestage {

namespace {

nlohmann::ordered_json frame_json(const FrameStats& f) {
  return {
      {"frame", f.frame},
      {"slot", f.slot},
      {"strategy", f.strategy == UploadStrategy::automatic ? "none" : to_string(f.strategy)},
      {"staged_ranges", f.staged_ranges},
      {"uploads", f.uploads},
      {"superseded_uploads", f.superseded_uploads},
      {"merged_overlaps", f.merged_overlaps},
      {"mirror_bytes", f.mirror_bytes},
      {"scattered_bytes", f.scattered_bytes},
      {"direct_bytes", f.direct_bytes},
      {"staging_copies", f.staging_copies},
      {"staging_copy_bytes", f.staging_copy_bytes},
      {"direct_copies", f.direct_copies},
      {"scatter_launches", f.scatter_launches},
      {"readbacks", f.readbacks},
      {"readback_bytes", f.readback_bytes},
      {"direct_readbacks", f.direct_readbacks},
      {"arena_used_bytes", f.arena_used_bytes},
      {"arena_capacity_bytes", f.arena_capacity_bytes},
      {"arena_overflowed", f.arena_overflowed},
      {"opened_by_upload", f.opened_by_upload},
      {"tick_graph", f.tick_graph},
  };
}

}  // namespace

void CoordinatorStats::add(const FrameStats& f) {
  ++frames;
  frames_opened_by_upload += f.opened_by_upload ? 1 : 0;
  tick_graph_frames += f.tick_graph ? 1 : 0;
  uploads += f.uploads;
  superseded_uploads += f.superseded_uploads;
  merged_overlaps += f.merged_overlaps;
  mirror_bytes += f.mirror_bytes;
  scattered_bytes += f.scattered_bytes;
  direct_bytes += f.direct_bytes;
  staging_copies += f.staging_copies;
  direct_copies += f.direct_copies;
  scatter_launches += f.scatter_launches;
  readbacks += f.readbacks;
  readback_bytes += f.readback_bytes;
  last_frame = f;
}

std::string CoordinatorStats::to_json() const {
  nlohmann::ordered_json slot_list = nlohmann::ordered_json::array();
  for (const Slot& s : slots) {
    slot_list.push_back({{"arena_capacity_bytes", s.arena_capacity_bytes},
                         {"arena_high_water_bytes", s.arena_high_water_bytes}});
  }
  const nlohmann::ordered_json j = {
      {"frames", frames},
      {"frames_opened_by_upload", frames_opened_by_upload},
      {"tick_graph_frames", tick_graph_frames},
      {"uploads", uploads},
      {"superseded_uploads", superseded_uploads},
      {"merged_overlaps", merged_overlaps},
      {"mirror_bytes", mirror_bytes},
      {"scattered_bytes", scattered_bytes},
      {"direct_bytes", direct_bytes},
      {"staging_copies", staging_copies},
      {"direct_copies", direct_copies},
      {"scatter_launches", scatter_launches},
      {"readbacks", readbacks},
      {"readback_bytes", readback_bytes},
      {"arena_growths", arena_growths},
      {"arena_trims", arena_trims},
      {"last_frame", frame_json(last_frame)},
      {"slots", slot_list},
  };
  return j.dump(2);
}

std::string to_json(const FrameStats& frame) {
  return frame_json(frame).dump(2);
}

}  // namespace framestage
