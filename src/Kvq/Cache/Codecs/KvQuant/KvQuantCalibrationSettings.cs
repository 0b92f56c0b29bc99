namespace Kvq.Cache.Codecs.KvQuant;

/// <summary>How a profile was calibrated (recorded in it so that numbers can be reproduced).</summary>
/// <param name="Text">File name of the calibration text.</param>
/// <param name="TextSha256">SHA-256 of the normalized calibration text (hex).</param>
/// <param name="Samples">Calibration windows.</param>
/// <param name="Length">Tokens per window, BOS included.</param>
/// <param name="SinkTokens">Leading tokens of each window left out of calibration (kept exact at inference).</param>
/// <param name="Seed">Seed of the window choice and of k-means' restarts.</param>
/// <param name="Fisher">Whether k-means was weighted by Fisher information (else uniformly).</param>
/// <param name="ValueMargin">The per-token outlier margin the codebooks were fitted at (<c>kvq calibrate --value-margin</c>);
/// nuq specs without <c>:marginM</c> split at it, so the codes fit the codebooks. Profiles before it: 1.5.</param>
public sealed record KvQuantCalibrationSettings(string Text, string TextSha256, int Samples, int Length, int SinkTokens,
    ulong Seed, bool Fisher, float ValueMargin = KvQuantSpec.ValueOutlierMargin);
