namespace Kvq.Cache.Codecs.KvQuant;

/// <summary>A calibration profile used with a model other than the one it was calibrated on.</summary>
public sealed class KvProfileMismatchException(string path, string profileFingerprint, string modelFingerprint)
    : ArgumentException($"profile {Path.GetFileName(path)} was calibrated for model {profileFingerprint}, but this model is " +
                        $"{modelFingerprint}: calibrate this model with 'kvq calibrate'")
{
    public string ProfilePath { get; } = path;
    public string ProfileFingerprint { get; } = profileFingerprint;
    public string ModelFingerprint { get; } = modelFingerprint;
}
