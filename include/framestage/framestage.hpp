/// @file framestage.hpp
/// @brief Everything a user of framestage includes.
#pragma once

#include <framestage/backend.hpp>
#include <framestage/broadcast.hpp>
#include <framestage/config.hpp>
#include <framestage/coordinator.hpp>
#include <framestage/device_buffer.hpp>
#include <framestage/error.hpp>
#include <framestage/frame_arena.hpp>
#include <framestage/frame_span.hpp>
#include <framestage/host_backend.hpp>
#include <framestage/readback.hpp>
#include <framestage/scheduler.hpp>
#include <framestage/stats.hpp>
#include <framestage/stream_copy.hpp>
#include <framestage/tick_graph.hpp>
#include <framestage/transfer_planner.hpp>
