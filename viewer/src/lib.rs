//! profscope: load pprof profiles, summarise and draw them.
