using System.Text;

namespace Kvq.Cli.Validation;

/// <summary>A text file given on the command line (--text, -f): a folder or a missing file is a user error, and bytes
/// that are not UTF-8 (Latin-1, binary) get a warning on stderr, since they are read as U+FFFD and score as garbage.</summary>
public static class TextInput
{
    /// <summary>Checks <paramref name="path"/> given as <paramref name="option"/>; warns on <paramref name="log"/> when it is not valid UTF-8.</summary>
    public static void Check(string path, string option, TextWriter log)
    {
        if (Directory.Exists(path)) throw new CliException($"{option} {path} is a directory: give a text file");
        if (!File.Exists(path)) throw new CliException($"text file not found: {path}");
        if (FirstInvalidUtf8(path) is { } at)
            log.WriteLine($"kvq: warning: {option} {path} is not valid UTF-8 (first bad byte at offset {at}" +
                          (HasNul(path) ? "; it holds NUL bytes, so it may be binary" : "; Latin-1 or another legacy encoding?") +
                          "): undecodable bytes are read as U+FFFD");
    }

    /// <summary>The offset of the first byte that is not part of valid UTF-8, or null. Null too for a file that starts
    /// with a UTF-16 or UTF-32 byte order mark: .NET's readers decode those as such (a Notepad "Unicode" file reads
    /// right), so warning that its bytes become U+FFFD was wrong.</summary>
    public static long? FirstInvalidUtf8(string path)
    {
        var bytes = File.ReadAllBytes(path);
        if (HasUtf16Or32Bom(bytes)) return null;
        var decoder = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
        try
        {
            decoder.GetCharCount(bytes);
            return null;
        }
        catch (DecoderFallbackException e)
        {
            return e.Index;
        }
    }

    // FF FE (UTF-16 LE; FF FE 00 00 is UTF-32 LE), FE FF (UTF-16 BE), 00 00 FE FF (UTF-32 BE): what StreamReader detects.
    private static bool HasUtf16Or32Bom(ReadOnlySpan<byte> b) =>
        b.StartsWith((ReadOnlySpan<byte>)[0xFF, 0xFE]) || b.StartsWith((ReadOnlySpan<byte>)[0xFE, 0xFF])
        || b.StartsWith((ReadOnlySpan<byte>)[0x00, 0x00, 0xFE, 0xFF]);

    private static bool HasNul(string path)
    {
        using var fs = File.OpenRead(path);
        var buf = new byte[(int)Math.Min(1 << 16, fs.Length)];
        int n = fs.ReadAtLeast(buf, buf.Length, throwOnEndOfStream: false);
        return Array.IndexOf(buf, (byte)0, 0, n) >= 0;
    }
}
