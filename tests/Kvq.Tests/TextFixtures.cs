namespace Kvq.Tests;

/// <summary>Reads fixture texts the way evaluation does: BOM dropped, CRLF turned into LF.</summary>
public static class TextFixtures
{
    public static string Read(string path) => Text.TextNormalizer.ReadNormalized(path);
}
