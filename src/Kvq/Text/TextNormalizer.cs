namespace Kvq.Text;

/// <summary>Evaluation text normalisation: UTF-8, byte-order mark dropped, CRLF (and lone CR) turned into LF.</summary>
public static class TextNormalizer
{
    public static string ReadNormalized(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"text file not found: {path}", path);
        return Normalize(File.ReadAllText(path, System.Text.Encoding.UTF8));
    }

    public static string Normalize(string text)
    {
        if (text.Length > 0 && text[0] == '\uFEFF') text = text[1..];
        return text.Replace("\r\n", "\n").Replace('\r', '\n');
    }
}
