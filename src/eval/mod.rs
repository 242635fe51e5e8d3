//! Evaluation: tracking metrics (CLEAR MOT, IDF1).

pub mod mot;
