namespace Kvq.Tokenizers;

/// <summary>
/// GPT-2's byte-to-unicode map: every byte value gets a printable character ('!'..'~', '¡'..'¬', '®'..'ÿ' stand for
/// themselves, the other 68 bytes take U+0100 onwards in byte order), so byte-level pieces are ordinary strings.
/// </summary>
internal static class ByteLevel
{
    public static readonly char[] ByteToChar = BuildByteToChar();
    private static readonly short[] CharToByte = BuildCharToByte(); // indexed by char, -1 where no byte maps there

    public static bool TryGetByte(char c, out byte b)
    {
        if (c < CharToByte.Length && CharToByte[c] >= 0)
        {
            b = (byte)CharToByte[c];
            return true;
        }
        b = 0;
        return false;
    }

    private static char[] BuildByteToChar()
    {
        var map = new char[256];
        int n = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= 0x21 and <= 0x7E or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            map[b] = printable ? (char)b : (char)(256 + n++);
        }
        return map;
    }

    private static short[] BuildCharToByte()
    {
        var inverse = new short[256 + 68];
        Array.Fill(inverse, (short)-1);
        for (int b = 0; b < 256; b++) inverse[ByteToChar[b]] = (short)b;
        return inverse;
    }
}
