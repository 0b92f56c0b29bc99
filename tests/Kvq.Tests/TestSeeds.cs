namespace Kvq.Tests;

/// <summary>Seeds for randomized tests that are the same in every process and on every machine (unlike
/// <see cref="string.GetHashCode()"/>, which .NET randomizes per process): FNV-1a over the parts' invariant text.</summary>
public static class TestSeeds
{
    public static int Of(params object[] parts)
    {
        uint h = 2166136261;
        foreach (var part in parts)
        {
            foreach (char c in Convert.ToString(part, System.Globalization.CultureInfo.InvariantCulture) ?? "")
            {
                h ^= c;
                h *= 16777619;
            }
            h ^= '|';
            h *= 16777619;
        }
        return (int)(h & 0x7fffffff);
    }
}
