-- -*- lua -*-
-- Module file created by spack (@SPACK_URL@) on 2026-11-25 06:17:39.226349
--
-- python@3.11.2+bz2+crypt+ctypes+dbm~debug+libxml2+lzma~optimizations+pic+pyexpat+pythoncmd+readline+shared+sqlite3+ssl~tkinter+uuid+zlib build_system=generic platform=linux os=debian12 target=x86_64/nuf5uir
--

whatis([[Name : python]])
whatis([[Version : 3.11.2]])
whatis([[Target : x86_64]])
whatis([[Short description : The Python programming language.]])
whatis([[Configure options : unknown, software installed outside of Spack]])

help([[Name   : python]])
help([[Version: 3.11.2]])
help([[Target : x86_64]])
help()
help([[The Python programming language.]])



prepend_path("MANPATH", "/usr/share/man", ":")
prepend_path("ACLOCAL_PATH", "/usr/share/aclocal", ":")
prepend_path("PKG_CONFIG_PATH", "/usr/lib/pkgconfig", ":")
prepend_path("PKG_CONFIG_PATH", "/usr/share/pkgconfig", ":")
append_path("MANPATH", "", ":")

