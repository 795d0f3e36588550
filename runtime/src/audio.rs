//! Reference audio in: decoding (WAV, FLAC, MP3, OGG/Vorbis), downmix and
//! resampling to the rate a model part needs (spec/09).
