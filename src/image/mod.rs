//! The hybrid image: ISO9660 + El Torito + protective MBR + GPT in one file.
