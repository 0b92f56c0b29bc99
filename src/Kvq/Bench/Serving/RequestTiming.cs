namespace Kvq.Bench.Serving;

/// <summary>When one request's tokens came, in seconds from its submission; whether it completed.</summary>
public sealed record RequestTiming(double[] TokenSeconds, bool Completed, string? Error = null)
{
    public double? TimeToFirstToken => TokenSeconds.Length > 0 ? TokenSeconds[0] : null;
}
