namespace Kvq.Cache.Codecs;

/// <summary>Calibration data a codec may need (KVQuant's per-channel scales and codebooks), tied to one model.</summary>
public interface IKvProfile
{
    /// <summary><c>ModelWeights.Fingerprint</c> of the model the profile was calibrated on.</summary>
    string ModelFingerprint { get; }
}

/// <summary>Where a codec instance is used: one instance per (layer, KV head) and side, so calibrated codecs can hold
/// that head's scales and that layer's codebook.</summary>
public sealed record KvCodecContext(KvSide Side, int BlockTokens, int HeadDim, int Layer, int KvHead, IKvProfile? Profile = null);
