"""Write the task's data: texts about made-up people, and the JSON each one should become.

Why synthetic: we know the right answer for every line, because each text is written *from* a person
record, and the target JSON comes from that record (and from how the text chose to spell it: a city
without its accents, a chat typed in lowercase), never parsed back out of the text.

Why it is built this way: an earlier version used ~30 fixed templates and short name/city lists. A model
trained on it learned those templates, and answered null whenever a text did not look like one (a plain
"Contact: <name> <email>, <city>." lost its city and e-mail). So this version teaches the skill:
  * vocabulary far beyond a list: names from 28 naming traditions (middle names, initials, particles,
    hyphens, double surnames, family-name-first), ~500 cities and towns, e-mails built the ways people build them;
  * shapes are composed, not templated: a FRAME (inbox e-mail, chat, CRM note, form dump, CSV row, table,
    log line, signature, contact card...) filled with one of many PHRASINGS per field, in random order;
  * every field but the name is missing ~25% of the time in every frame alike, so null is never a safe guess;
  * half the texts carry distractors: other people's ages, cities and e-mails, office and visited cities,
    other dates, phone and order numbers, titles before names;
  * the eval split has its own names, and cities, frames and phrasings that train never shows.

    python3 data/generate.py              # rewrites data/*.jsonl; same seed -> same bytes
    python3 data/generate.py --seed 1 --out /tmp/data
"""

import argparse
import json
import random
import re
import sys
import unicodedata
import zlib
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

if __name__ == "__main__":  # run as a script: make the ftlab package (one folder up) importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ftlab.data import ERROR_KINDS, as_sft
from ftlab.metrics import score
from ftlab.task import FIELDS, date_in_words, describe_messages, prompt_messages

DEFAULT_SIZES = {"sft_train": 2000, "sft_eval": 100, "preference": 400, "rl_prompts": 300,
                 "prose_train": 3000, "prose_eval": 200, "describe_train": 2000, "describe_eval": 100}
P_MISSING = 0.22  # each field but the name is left out this often (the same in every frame)
P_ONLY_NAME = 0.03  # and sometimes the text says nothing but the name: ~25% null per field in all
P_OBFUSCATED = 0.08  # "ana dot ruiz at gmail dot com"
N_DISTRACTORS = ([0, 1, 2, 3], [48, 32, 15, 5])  # how many facts about something else a text carries
P_HELD_OUT = 0.5  # in eval, how often a held-out city, phrasing or label is preferred to a train one
P_EVAL_FRAME = 0.4  # and how often the eval text uses a frame train never saw
FIRST_SIGNUP, LAST_SIGNUP = date(2010, 1, 1), date(2026, 6, 30)
TODAY = date(2026, 7, 1)  # birth years in distractors agree with the person's age as of this day

# ====================================================================================================
# 1. Vocabulary, written as "key: a, b, c / d, e; key2: ..." tables (line breaks count as spaces).
# ====================================================================================================
def items(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def words(text: str) -> list[str]:
    return text.split()


def table(text: str) -> dict[str, list[list[str]]]:
    """'k: a, b / c; k2: d' -> {'k': [['a', 'b'], ['c']], 'k2': [['d']]}."""
    chunks = (chunk.split(":", 1) for chunk in " ".join(text.split()).split(";") if chunk.strip())
    return {key.strip(): [items(part) for part in body.split("/")] for key, body in chunks}


# Names, one naming tradition per paragraph: female given names / male given names / family names.
CULTURES = table("""
english: Emily, Charlotte, Olivia, Hannah, Lucy, Megan, Rachel, Sarah, Laura, Rebecca, Abigail, Bethany, Harriet,
Imogen, Jessica, Katherine, Eleanor, Amelia, Naomi, Rosie, Danielle, Courtney, Heather / James, Oliver, Harry,
Thomas, William, George, Daniel, Matthew, Christopher, Benjamin, Samuel, Joshua, Edward, Henry, Robert, Michael,
Andrew, Nathan, Tyler, Brandon, Connor, Ethan, Callum / Smith, Jones, Taylor, Brown, Williams, Wilson, Johnson,
Davies, Robinson, Wright, Thompson, Evans, Walker, White, Roberts, Green, Hall, Wood, Clarke, Harrison, Cooper,
Ward, Turner, Parker, Bennett, Hughes, Fletcher, Marshall, Holloway, Whitaker, Ashworth, Pemberton;
celtic: Siobhán, Aoife, Niamh, Saoirse, Caoimhe, Róisín, Clodagh, Orla, Ailsa, Isla, Morag, Eilidh, Catriona,
Rhiannon, Cerys, Bronwen, Ffion, Sinéad, Gráinne, Mairéad / Ciarán, Seán, Pádraig, Oisín, Cian, Darragh, Eoin,
Tadhg, Ruairí, Colm, Lachlan, Hamish, Angus, Euan, Iain, Rhys, Dafydd, Gareth, Owain, Aled / O'Brien, Murphy, Kelly,
O'Sullivan, Walsh, Byrne, Ryan, O'Connor, McCarthy, Gallagher, Doherty, Kennedy, Brennan, Ní Bhriain,
Mac Giolla Phádraig, MacDonald, MacLeod, Campbell, Stewart, Robertson, McKenzie, Drummond, Sinclair, Llewellyn,
Pritchard, Vaughan, Rees, Griffiths;
french: Camille, Chloé, Léa, Manon, Élodie, Amélie, Juliette, Margaux, Clémence, Océane, Mathilde, Aurélie, Céline,
Sandrine, Nathalie, Hélène, Geneviève, Maëlle, Noémie, Solène / Pierre, Julien, Mathieu, Étienne, Antoine,
Guillaume, Théo, Hugo, Baptiste, Clément, Raphaël, Gaël, Loïc, Yannick, Olivier, Jérôme, Benoît, François,
Sébastien, Arnaud / Dubois, Moreau, Laurent, Lefèvre, Girard, Fontaine, Rousseau, Mercier, Bonnet, Lambert,
Chevalier, Faure, Gauthier, Perrin, Leroy, Roux, Blanchard, Garnier, Duval, Marchand, Le Gall, Le Goff, Dupont,
Beaumont, Lemaire;
germanic: Lena, Leonie, Johanna, Katharina, Friederike, Annika, Greta, Ilse, Wiebke, Sabine, Ute, Birgit, Jana,
Sanne, Femke, Lotte, Maartje, Anouk, Fleur, Eva / Jonas, Felix, Lukas, Maximilian, Tobias, Jürgen, Dieter, Matthias,
Florian, Moritz, Sebastian, Wolfgang, Ruben, Daan, Bram, Sander, Joost, Pieter, Thijs, Wouter / Müller, Schmidt,
Schneider, Fischer, Weber, Meyer, Wagner, Becker, Hoffmann, Schäfer, Koch, Richter, Krüger, Zimmermann, Hartmann,
Köhler, Weiß, von Bergen, van der Berg, de Vries, van Dijk, Jansen, de Jong, Bakker, Visser, Mulder, van den Broek,
Verhoeven, Janssens, Peeters;
italian: Giulia, Francesca, Chiara, Alessia, Martina, Federica, Valentina, Giorgia, Sara, Elisa, Ilaria, Beatrice,
Serena, Silvia, Caterina, Ludovica, Arianna, Bianca / Marco, Luca, Matteo, Alessandro, Lorenzo, Davide, Simone,
Federico, Giovanni, Riccardo, Stefano, Andrea, Giacomo, Niccolò, Tommaso, Pietro, Salvatore, Emanuele / Rossi,
Russo, Ferrari, Esposito, Bianchi, Romano, Colombo, Ricci, Marino, Greco, Gallo, Conti, De Luca, Mancini, Costa,
Giordano, Rizzo, Lombardi, Moretti, Barbieri, Fontana, Santoro, Caruso, D'Angelo, Di Stefano;
spanish: Ana, Lucía, María José, Carmen, Elena, Paula, Alba, Marta, Nerea, Ainhoa, Rocío, Pilar, Montserrat, Irene,
Begoña, Itziar, Lorena, Raquel, Cristina, Noelia / José Luis, Javier, Pablo, Sergio, Álvaro, Jorge, Iñaki, Unai,
Jordi, Xavier, Manuel, Francisco, Rubén, Ignacio, Gonzalo, Adrián, Íker, Fermín / García, Fernández, González,
Rodríguez, López, Martínez, Sánchez, Pérez, Gómez, Martín, Jiménez, Ruiz, Hernández, Díaz, Moreno, Muñoz, Álvarez,
Romero, Navarro, Torres, Domínguez, Gil, Vázquez, Serrano, Ramos, Blanco, Ortega, Delgado, Iglesias, Echeverría,
Etxeberria, de la Cruz, del Río, de la Fuente;
latin_american: Valentina, Camila, Ximena, Guadalupe, Daniela, Fernanda, Renata, Luciana, Florencia, Agustina,
Milagros, Yesenia, Maribel, Gabriela, Natalia, Paola, Catalina, Antonella / Mateo, Santiago, Sebastián, Matías,
Tomás, Joaquín, Emiliano, Diego, Alejandro, Rodrigo, Ricardo, Facundo, Nicolás, Andrés, Julián, Esteban, Fabián,
Cristian / Quispe, Mamani, Huamán, Flores, Vargas, Castro, Rojas, Mendoza, Gutiérrez, Chávez, Ramírez, Aguilar,
Medina, Herrera, Ríos, Cabrera, Sepúlveda, Villalobos, Contreras, Espinoza, Cárdenas, Benítez, Acosta, Salazar,
Peña, Montoya, Zapata, Rincón;
portuguese: Beatriz, Inês, Mariana, Leonor, Matilde, Carolina, Joana, Ana Luísa, Letícia, Larissa, Thaís, Juliana,
Bruna, Vitória, Fabiana, Conceição, Graça / João, Tiago, Rui, Nuno, Duarte, Gonçalo, Afonso, Miguel, Vasco, Thiago,
Gustavo, Rafael, Leandro, Caio, Vinícius, Henrique, Otávio, Luiz / Silva, Santos, Ferreira, Pereira, Oliveira,
Rodrigues, Martins, Sousa, Fernandes, Gonçalves, Gomes, Lopes, Marques, Alves, Almeida, Ribeiro, Pinto, Carvalho,
Teixeira, Moreira, Correia, Mendes, Nunes, Cardoso, Araújo, Barbosa, Azevedo, dos Santos, de Souza, do Nascimento;
nordic: Ingrid, Astrid, Freya, Sigrid, Solveig, Liv, Maja, Elin, Linnea, Ebba, Saga, Signe, Karin, Birgitta, Ida,
Mette, Sofie, Aino, Helmi, Kaisa, Sanna, Guðrún, Katla / Lars, Björn, Sven, Erik, Magnus, Anders, Henrik, Mikael,
Oskar, Nils, Gustav, Axel, Jens, Søren, Mads, Rasmus, Eero, Juha, Mikko, Ville, Jukka, Einar, Gunnar / Johansson,
Andersson, Karlsson, Nilsson, Lindqvist, Lindgren, Berglund, Sandberg, Holm, Hansen, Johansen, Olsen, Larsen,
Andersen, Nielsen, Jensen, Pedersen, Sørensen, Kristiansen, Ødegaard, Haugen, Virtanen, Korhonen, Mäkinen, Nieminen,
Hämäläinen, Laine, Koskinen, Guðmundsson;
baltic: Ieva, Austėja, Gabija, Rūta, Eglė, Līga, Ilze, Baiba, Dace, Kristīne, Anete, Liis, Kadri, Triin, Maarja,
Kertu / Mindaugas, Darius, Arvydas, Vytautas, Kęstutis, Jānis, Mārtiņš, Kārlis, Edgars, Raimonds, Andrus, Tõnu,
Märt, Rein, Kristjan, Siim / Kazlauskas, Petrauskas, Jankauskas, Žukauskas, Paulauskas, Vasiliauskas, Bērziņš,
Kalniņš, Ozols, Liepa, Krūmiņš, Jansons, Tamm, Saar, Sepp, Mägi, Kask, Kukk, Rebane, Ilves;
slavic: Agnieszka, Katarzyna, Małgorzata, Zofia, Magdalena, Aleksandra, Kateřina, Tereza, Lucie, Veronika, Zuzana,
Olga, Tatiana, Ekaterina, Daria, Oksana, Yulia, Iryna, Milena, Jelena, Ivana, Dragana, Nataša, Bożena, Jadwiga /
Łukasz, Piotr, Krzysztof, Tomasz, Paweł, Michał, Wojciech, Grzegorz, Jakub, Ondřej, Jiří, Vojtěch, Dmitri, Nikolai,
Aleksandr, Sergei, Ivan, Oleksandr, Bohdan, Taras, Andriy, Dragan, Nikola, Miloš, Goran, Stjepan, Radek / Nowak,
Kowalski, Wiśniewski, Wójcik, Kowalczyk, Kamiński, Lewandowski, Zieliński, Szymański, Woźniak, Dąbrowski, Kozłowski,
Jankowski, Mazur, Krawczyk, Novák, Novotný, Dvořák, Černý, Horák, Ivanov, Smirnov, Volkov, Kuznetsov, Sokolov,
Lebedev, Shevchenko, Kovalenko, Bondarenko, Tkachenko, Melnyk, Horvat, Kovačević, Babić, Marić, Jovanović, Petrović,
Nikolić, Đorđević;
greek: Eleni, Katerina, Dimitra, Ioanna, Vasiliki, Despina, Chrysoula, Evangelia, Paraskevi, Theodora, Anastasia,
Sofia / Giorgos, Dimitris, Kostas, Nikos, Yannis, Panagiotis, Christos, Vasilis, Stavros, Thanasis, Spyros,
Alexandros, Michalis, Apostolos, Stelios / Papadopoulos, Georgiou, Nikolaidis, Papadakis, Vlachos, Oikonomou,
Karagiannis, Pappas, Konstantinidis, Dimitriou, Makris, Antoniou, Christodoulou, Alexiou, Stavropoulos, Theodorou;
hungarian: Dóra, Eszter, Réka, Zsófia, Katalin, Ágnes, Krisztina, Orsolya, Boglárka, Anikó, Erzsébet, Judit, Tímea /
Bence, Balázs, Gergely, Zoltán, László, Attila, Máté, Ádám, Péter, Tamás, Csaba, Levente, Gábor, Miklós, Szabolcs /
Nagy, Kovács, Tóth, Szabó, Horváth, Varga, Kiss, Molnár, Németh, Farkas, Balogh, Papp, Takács, Juhász, Lakatos,
Mészáros, Rácz, Fekete;
romanian: Ioana, Andreea, Mihaela, Roxana, Oana, Raluca, Irina, Simona, Larisa, Ilinca / Andrei, Mihai, Ionuț,
Alexandru, Ștefan, Radu, Vlad, Florin, Adrian, Sorin, Cătălin, Răzvan, Dragoș, Tudor / Popescu, Ionescu, Popa,
Dumitrescu, Stoica, Gheorghe, Munteanu, Constantinescu, Marinescu, Lungu, Ciobanu, Rusu, Moldovan, Ungureanu,
Diaconu, Tănase, Vasilescu;
turkish: Ayşe, Fatma, Zeynep, Elif, Emine, Merve, Büşra, Esra, Selin, Ebru, Gülay, Hatice, Özlem, Sevgi, Tuğba,
Derya, Nilay / Mehmet, Mustafa, Ahmet, Hüseyin, Murat, Emre, Burak, Kerem, Serkan, Onur, Barış, Oğuz, Cem, Volkan,
Uğur, Tolga, Yiğit / Yılmaz, Kaya, Demir, Şahin, Çelik, Yıldız, Yıldırım, Öztürk, Aydın, Özdemir, Arslan, Doğan,
Kılıç, Aslan, Çetin, Koç, Kurt, Özkan, Şimşek, Polat, Korkmaz, Güneş;
arabic: Fatima, Aisha, Maryam, Noor, Layla, Yasmin, Zainab, Huda, Salma, Rania, Dalia, Amira, Lina, Reem, Nour,
Samira, Mariam, Jamila, Rasha, Dina, Asma, Khadija / Ahmed, Mohammed, Omar, Hassan, Hussein, Khalid, Youssef,
Ibrahim, Tariq, Karim, Samir, Walid, Faisal, Hamza, Bilal, Rami, Ziad, Nabil, Tarek, Mahmoud, Abdullah, Anas,
Majid / Haddad, Khalil, Mansour, Nasser, Saleh, Hamdan, Al-Farsi, Al-Sayed, El-Amin, bin Rashid, Al-Hashimi,
Darwish, Barakat, Aziz, Habib, Jaber, Kassab, Suleiman, Shaheen, El-Masry, Abu Zaid, bin Salem;
persian: Shirin, Parisa, Nasrin, Roya, Mahsa, Setareh, Azadeh, Golnar, Niloufar, Yasaman, Shadi, Ladan, Mitra,
Fereshteh, Tahmineh / Reza, Amir, Hamid, Mehdi, Farhad, Dariush, Kourosh, Babak, Arash, Behnam, Kaveh, Navid, Omid,
Payam, Siavash, Parviz, Hossein / Hosseini, Rezaei, Mohammadi, Ahmadi, Karimi, Moradi, Jafari, Rahimi, Ghorbani,
Sadeghi, Tehrani, Esfahani, Farahani, Najafi, Kazemi, Nouri, Amini, Bagheri, Mousavi, Ebrahimi;
south_asian: Priya, Ananya, Aishwarya, Divya, Kavya, Lakshmi, Meera, Neha, Pooja, Shreya, Anjali, Deepika, Ishita,
Nandini, Radhika, Sunita, Ayesha, Sana, Farzana, Nusrat, Tahmina, Dilini, Harpreet, Simran / Rahul, Arjun, Rohan,
Vikram, Aditya, Siddharth, Karthik, Sanjay, Suresh, Ramesh, Anil, Amit, Vivek, Pranav, Harish, Imran, Usman, Tanvir,
Rafiq, Kasun, Nuwan, Prakash, Manpreet, Jaswinder, Nikhil, Abhishek / Patel, Sharma, Singh, Kaur, Gupta, Kumar,
Reddy, Nair, Menon, Iyer, Rao, Das, Banerjee, Chatterjee, Mukherjee, Bose, Joshi, Desai, Mehta, Shah, Khan, Qureshi,
Chaudhry, Malik, Chowdhury, Hossain, Perera, Jayawardena, Bandara, Pillai, Krishnan, Subramanian, Agarwal, Kapoor,
Verma, Thapa, Shrestha, Gurung;
chinese: Mei, Xiaoling, Jing, Hui, Xin, Ying, Fang, Wen, Yuxin, Zihan, Yutong, Jiayi, Siqi, Ruoxi, Qing, Lihua,
Xiaomei, Mingyue / Wei, Jun, Hao, Lei, Ming, Tao, Jian, Zhiwei, Haoran, Yichen, Zihao, Junjie, Jiahao, Xiaoming,
Guang, Qiang, Jianguo, Tianyu / Wang, Li, Zhang, Liu, Chen, Huang, Zhao, Zhou, Xu, Zhu, Guo, Lin, Luo, Gao, Zheng,
Liang, Xie, Tang, Deng, Feng, Cao, Peng, Wong, Chan, Leung, Cheung, Lau, Tsang, Tan, Lim, Goh, Teo;
japanese: Aiko, Yui, Haruka, Sakura, Yuki, Keiko, Mika, Ayaka, Misaki, Nanami, Hina, Kaori, Emi, Asuka, Chihiro,
Megumi, Noriko, Tomoko, Yoko, Akane, Miyu, Natsuki / Kenji, Takeshi, Hiroshi, Haruto, Yuto, Sota, Daiki, Kenta,
Shota, Takumi, Ryo, Kazuki, Naoki, Satoshi, Yusuke, Tatsuya, Kohei, Akira, Masato, Hideo, Taro / Tanaka, Sato,
Suzuki, Takahashi, Watanabe, Ito, Yamamoto, Nakamura, Kobayashi, Kato, Yoshida, Yamada, Sasaki, Yamaguchi, Inoue,
Kimura, Hayashi, Shimizu, Mori, Ikeda, Hashimoto, Ishikawa, Ogawa, Fujita, Okada, Hasegawa, Murakami, Kondo, Saito,
Endo, Aoki, Fujiwara, Ōno;
korean: Ji-woo, Seo-yeon, Min-ji, Ha-eun, Soo-jin, Ji-eun, Hye-jin, Yuna, Eun-ji, Da-eun, Jiyoung, Minseo,
Chaeyoung, Subin, Yeji, Sora / Min-jun, Seo-jun, Do-yun, Ji-ho, Jae-won, Hyun-woo, Sung-min, Jun-ho, Dong-hyun,
Tae-yang, Jin-woo, Minho, Jisung, Seungmin, Woojin, Kyung-soo, Sang-hoon / Kim, Lee, Park, Choi, Jung, Kang, Cho,
Yoon, Jang, Han, Seo, Shin, Kwon, Hwang, Ahn, Yoo, Jeon, Moon, Bae, Baek;
vietnamese: Linh, Hương, Thảo, Trang, Ngọc, Phương, Thu, Vy, Quỳnh, Hạnh, Nhung, Diệp, Tuyết / Minh, Huy, Dũng,
Tuấn, Hùng, Quang, Phúc, Khoa, Bảo, Đức, Thắng, Hiếu, Trung, Sơn, Việt / Nguyễn, Trần, Lê, Phạm, Hoàng, Huỳnh, Phan,
Vũ, Võ, Đặng, Bùi, Đỗ, Ngô, Dương, Trịnh;
malay_indonesian: Siti, Dewi, Putri, Ayu, Wulan, Indah, Ratna, Nurul, Intan, Fitri, Rina, Kartika, Larasati,
Aisyah / Budi, Agus, Joko, Eko, Rizky, Bayu, Dimas, Hendra, Wahyu, Arief, Fajar, Andi, Hafiz, Amirul, Faizal, Irfan,
Danial / Wijaya, Santoso, Kusuma, Pratama, Saputra, Hidayat, Gunawan, Setiawan, Nugroho, Susanto, Halim, Siregar,
Nasution, Sitompul, Harahap, Lubis, bin Ismail, bin Hamzah;
filipino: Kristine, Angelica, Maricel, Lorna, Rowena, Marites, Jonalyn, Rhea, Arlene, Divina, Leonora, Ligaya,
Analyn / Juan, Jericho, Rommel, Ramil, Arnel, Jomar, Rodel, Edgardo, Renato, Bayani, Dindo, Emmanuel, Carlo, Paolo /
Reyes, Bautista, Ocampo, Dela Cruz, Villanueva, Aquino, Tolentino, Manalo, Dizon, Soriano, Pascual, Macaraeg,
Panganiban, Magsaysay, Lacson, Sison, Mercado, Salonga;
west_african: Adaeze, Chiamaka, Ngozi, Funmilayo, Folake, Yetunde, Abimbola, Temitope, Ifeoma, Nneka, Amaka, Hauwa,
Efua, Akosua, Abena, Adwoa, Afua, Mariama, Fatoumata, Aminata, Binta / Chinedu, Emeka, Obinna, Tunde, Babatunde,
Segun, Femi, Kelechi, Ikenna, Chukwuemeka, Musa, Abubakar, Kwame, Kofi, Kwabena, Yaw, Kojo, Kwesi, Mamadou, Ousmane,
Moussa, Cheikh, Sekou / Okafor, Adeyemi, Okonkwo, Nwosu, Eze, Balogun, Ogunleye, Afolabi, Chukwu, Okeke, Ibekwe,
Mensah, Asante, Owusu, Boateng, Appiah, Osei, Agyeman, Darko, Ofori, Diallo, Traoré, Keïta, Coulibaly, Ndiaye, Sow,
Cissé, Diop, Sesay, Kamara, Bello, Danjuma;
east_african: Wanjiru, Akinyi, Atieno, Njeri, Wambui, Nyokabi, Zawadi, Neema, Rehema, Imani, Halima, Makena,
Nasimiyu, Tigist, Hiwot, Selam, Meseret, Liya, Saron, Aster / Kamau, Otieno, Kipchoge, Kiprono, Omondi, Ochieng,
Baraka, Juma, Jabari, Tesfaye, Dawit, Yohannes, Abebe, Mekonnen, Salim, Rashidi / Mwangi, Odhiambo, Wanjiku,
Kariuki, Njoroge, Kiprotich, Cheruiyot, Mutua, Onyango, Ouma, Okello, Mugisha, Nsubuga, Mushi, Massawe, Bekele,
Girma, Alemu, Tadesse, Gebremedhin, Abdi, Warsame;
southern_african: Thandiwe, Nomvula, Lerato, Palesa, Naledi, Zanele, Nandi, Ayanda, Thabisa, Busisiwe, Khanyisile,
Refilwe, Rutendo, Chipo, Nyasha, Chiedza, Tsitsi / Sipho, Thabo, Themba, Bongani, Mandla, Sibusiso, Tshepo, Kagiso,
Lwazi, Siyabonga, Farai, Tinashe, Tapiwa, Kudakwashe, Tawanda, Chanda, Mulenga, Bwalya / Dlamini, Nkosi, Ndlovu,
Khumalo, Mokoena, Mahlangu, Mthembu, Sithole, Ngcobo, Botha, van Wyk, Pretorius, du Plessis, Venter, Naidoo, Moyo,
Ncube, Mutasa, Banda, Phiri, Mwale, Tembo;
pacific: Moana, Leilani, Mere, Aroha, Anahera, Kahurangi, Ngaio, Hinemoa, Losa, Sina, Malia, Mele, Salote, Lupe,
Vaiana, Noelani, Tiare / Tama, Wiremu, Rawiri, Nikau, Hemi, Tane, Manaia, Ropata, Sione, Viliami, Tevita, Siaosi,
Sefa, Makoa, Keanu, Iosefa, Malakai / Ngata, Parata, Tamihana, Te Rangi, Fifita, Taufa, Vaifale, Leota, Tuilagi,
Faleolo, Sopoaga, Kealoha, Kahananui, Akana, Fonoti, Moala, Havili, Vake;
""")
# Family names that change for a woman (Kowalski -> Kowalska); a rule ending in a space is a prefix rule.
FEMININE = {
    "slavic": [("ski", "ska"), ("cki", "cka"), ("ý", "á"), ("ák", "áková"), ("ov", "ova"), ("ev", "eva")],
    "baltic": [("as", "ienė"), ("š", "a"), ("ons", "one"), ("ls", "la")],
    "greek": [("opoulos", "opoulou"), ("idis", "idou"), ("os", "ou"), ("is", "i"), ("as", "a")],
    "arabic": [("bin ", "bint ")],
    "malay_indonesian": [("bin ", "binti ")],
}
FAMILY_FIRST = {"chinese": 0.35, "japanese": 0.3, "korean": 0.35, "vietnamese": 0.6, "hungarian": 0.35}
TWO_SURNAMES = {"spanish", "latin_american", "portuguese"}  # "García Márquez", "Costa Pereira"
NO_MIDDLE = {"chinese", "japanese", "korean"}
TITLES = {"female": ["Ms.", "Mrs.", "Dr.", "Prof.", "Ms", "Dr"], "male": ["Mr.", "Dr.", "Prof.", "Mr", "Dr"]}

# Cities and towns by country; for the US, Canada and Australia the state follows the city ("Austin TX").
CITIES = table("""
Portugal: Lisbon, Porto, Braga, Coimbra, Faro, Évora, Aveiro, Funchal, Setúbal, Guimarães, Tavira; Spain: Madrid,
Barcelona, Valencia, Sevilla, Bilbao, Málaga, Zaragoza, Granada, Córdoba, Salamanca, A Coruña, Cádiz, Palma, Girona,
San Sebastián, Valladolid, Logroño, Ronda; France: Paris, Lyon, Marseille, Toulouse, Bordeaux, Lille, Nantes,
Strasbourg, Montpellier, Rennes, Grenoble, Dijon, Besançon, Aix-en-Provence, Saint-Étienne, Nîmes, Annecy, Colmar;
Italy: Rome, Milan, Naples, Turin, Bologna, Florence, Genoa, Palermo, Verona, Bari, Trieste, Padua, Lecce, Perugia,
Matera; Germany: Berlin, Hamburg, Munich, Köln, Frankfurt, Stuttgart, Düsseldorf, Leipzig, Dresden, Nürnberg,
Bremen, Freiburg, Münster, Göttingen, Heidelberg, Rostock, Lübeck, Tübingen, Bamberg; Austria: Vienna, Graz,
Salzburg, Linz, Innsbruck; Switzerland: Zürich, Geneva, Basel, Bern, Lausanne, Lucerne; Netherlands: Amsterdam,
Rotterdam, Utrecht, The Hague, Eindhoven, Groningen, Leiden, Maastricht; Belgium: Brussels, Antwerp, Ghent, Leuven,
Liège; UK: London, Manchester, Leeds, Bristol, Liverpool, Glasgow, Edinburgh, Cardiff, Belfast, Sheffield,
Nottingham, Brighton, Norwich, York, Aberdeen, Swansea, Exeter, Inverness, Whitby, Totnes; Ireland: Dublin, Cork,
Galway, Limerick, Kilkenny, Dingle; Norway: Oslo, Bergen, Trondheim, Tromsø, Stavanger, Ålesund; Sweden: Stockholm,
Göteborg, Malmö, Uppsala, Umeå, Visby; Denmark: Copenhagen, Aarhus, Odense, Aalborg, Ribe; Finland: Helsinki,
Tampere, Turku, Oulu, Porvoo; Iceland: Reykjavík, Akureyri; Estonia: Tallinn, Tartu; Latvia: Riga, Liepāja;
Lithuania: Vilnius, Kaunas, Klaipėda; Poland: Warsaw, Kraków, Gdańsk, Wrocław, Poznań, Łódź, Lublin, Szczecin,
Katowice, Zakopane; Czechia: Prague, Brno, Ostrava, Plzeň, Český Krumlov; Slovakia: Bratislava, Košice; Hungary:
Budapest, Debrecen, Szeged, Pécs; Romania: Bucharest, Cluj-Napoca, Timișoara, Iași, Brașov; Bulgaria: Plovdiv,
Varna; Croatia: Zagreb, Rijeka, Zadar, Dubrovnik; Slovenia: Ljubljana; Serbia: Belgrade, Novi Sad;
Bosnia and Herzegovina: Sarajevo; North Macedonia: Skopje; Albania: Tirana; Greece: Athens, Thessaloniki, Patras,
Heraklion, Chania; Ukraine: Kyiv, Lviv, Odesa, Kharkiv, Dnipro; Georgia: Tbilisi; Armenia: Yerevan; Azerbaijan:
Baku; Kazakhstan: Almaty; Uzbekistan: Tashkent; Turkey: Istanbul, Ankara, Izmir, Bursa, Antalya, Eskişehir, Trabzon,
Gaziantep; Lebanon: Beirut; Jordan: Amman; UAE: Dubai, Abu Dhabi; Qatar: Doha; Saudi Arabia: Riyadh, Jeddah; Oman:
Muscat; Kuwait: Kuwait City; Bahrain: Manama; Iraq: Erbil; Iran: Tehran, Isfahan, Shiraz, Tabriz, Mashhad; Egypt:
Cairo, Alexandria; Morocco: Casablanca, Marrakesh, Rabat, Fès, Chefchaouen; Tunisia: Tunis, Sfax; Algeria: Algiers,
Oran; Nigeria: Lagos, Abuja, Ibadan, Kano, Enugu, Port Harcourt; Ghana: Accra, Kumasi, Tamale, Cape Coast; Senegal:
Dakar; Côte d'Ivoire: Abidjan; Mali: Bamako; Burkina Faso: Ouagadougou; Togo: Lomé; Benin: Cotonou; Sierra Leone:
Freetown; Liberia: Monrovia; Guinea: Conakry; Kenya: Nairobi, Mombasa, Kisumu, Eldoret, Lamu; Uganda: Kampala,
Entebbe; Tanzania: Dar es Salaam, Arusha; Rwanda: Kigali; Ethiopia: Addis Ababa, Bahir Dar; Djibouti: Djibouti;
South Africa: Cape Town, Johannesburg, Durban, Pretoria, Gqeberha, Stellenbosch, Bloemfontein, Knysna; Namibia:
Windhoek; Botswana: Gaborone; Zimbabwe: Harare, Bulawayo; Zambia: Lusaka; Malawi: Lilongwe; Mozambique: Maputo;
Madagascar: Antananarivo; India: Mumbai, Delhi, Bengaluru, Chennai, Kolkata, Hyderabad, Pune, Ahmedabad, Jaipur,
Kochi, Lucknow, Chandigarh, Indore, Mysuru, Udaipur, Rishikesh; Pakistan: Karachi, Lahore, Islamabad; Bangladesh:
Dhaka, Chittagong; Nepal: Kathmandu, Pokhara; Sri Lanka: Colombo, Kandy; Bhutan: Thimphu; China: Beijing, Shanghai,
Shenzhen, Guangzhou, Chengdu, Hangzhou, Wuhan, Xi'an, Nanjing, Kunming, Guilin; Hong Kong: Hong Kong; Taiwan:
Taipei, Kaohsiung, Tainan; Japan: Tokyo, Osaka, Kyoto, Sapporo, Fukuoka, Nagoya, Sendai, Kobe, Yokohama, Naha,
Kanazawa, Nara; South Korea: Seoul, Busan, Incheon, Daegu, Gwangju, Jeonju, Gyeongju; Vietnam: Hanoi,
Ho Chi Minh City, Da Nang, Huế, Hai Phong, Hội An; Thailand: Bangkok, Chiang Mai, Phuket; Malaysia: Kuala Lumpur,
George Town, Johor Bahru; Singapore: Singapore; Cambodia: Phnom Penh, Siem Reap; Laos: Vientiane; Myanmar: Yangon,
Mandalay; Indonesia: Jakarta, Bandung, Surabaya, Yogyakarta, Denpasar, Medan, Makassar; Philippines: Manila,
Quezon City, Cebu City, Davao City, Iloilo City, Baguio; New Zealand: Auckland, Wellington, Christchurch, Dunedin,
Rotorua, Queenstown; Fiji: Suva; Samoa: Apia; Tonga: Nuku'alofa; Papua New Guinea: Port Moresby; New Caledonia:
Nouméa; French Polynesia: Papeete; Australia: Sydney NSW, Melbourne VIC, Brisbane QLD, Perth WA, Hobart TAS,
Darwin NT, Canberra ACT, Cairns QLD, Geelong VIC, Byron Bay NSW, Fremantle WA; USA: New York NY, Los Angeles CA,
Chicago IL, Houston TX, Austin TX, El Paso TX, Phoenix AZ, Tucson AZ, Denver CO, Boulder CO, Seattle WA, Spokane WA,
Portland OR, San Francisco CA, San Diego CA, Sacramento CA, Boston MA, Philadelphia PA, Pittsburgh PA, Atlanta GA,
Savannah GA, Miami FL, Tampa FL, Nashville TN, Memphis TN, New Orleans LA, Minneapolis MN, Duluth MN, Detroit MI,
Ann Arbor MI, Milwaukee WI, Columbus OH, Cleveland OH, Kansas City MO, Omaha NE, Albuquerque NM, Santa Fe NM,
Salt Lake City UT, Boise ID, Anchorage AK, Honolulu HI, Raleigh NC, Asheville NC, Baltimore MD, Burlington VT,
Providence RI, Buffalo NY, Ithaca NY, Bozeman MT, Taos NM; Canada: Toronto ON, Ottawa ON, Montréal QC,
Québec City QC, Vancouver BC, Calgary AB, Edmonton AB, Winnipeg MB, Halifax NS, Saskatoon SK, St. John's NL,
Banff AB, Tofino BC; Mexico: Mexico City, Guadalajara, Monterrey, Puebla, Oaxaca, Mérida, Tijuana, Querétaro;
Guatemala: Guatemala City; Costa Rica: San José; Panama: Panama City; Cuba: Havana; Dominican Republic:
Santo Domingo; Puerto Rico: San Juan; Jamaica: Kingston; Trinidad and Tobago: Port of Spain; Honduras: Tegucigalpa;
Nicaragua: Managua; Brazil: São Paulo, Rio de Janeiro, Belo Horizonte, Porto Alegre, Curitiba, Recife, Fortaleza,
Manaus, Belém, Florianópolis, Brasília, Paraty; Argentina: Buenos Aires, Rosario, Mendoza, Bariloche; Uruguay:
Montevideo; Paraguay: Asunción; Chile: Valparaíso, Concepción; Peru: Arequipa, Cusco; Ecuador: Quito, Guayaquil,
Cuenca; Colombia: Bogotá, Medellín, Barranquilla, Cartagena; Venezuela: Caracas, Maracaibo; Bolivia: La Paz,
Cochabamba;
""")

# E-mail domains: webmail and ISPs, universities, and made-up companies under many country endings; handles
# people pick instead of their name; jobs and relatives for the phrasings and distractors.
WEBMAIL = words("""
gmail.com outlook.com hotmail.com yahoo.com icloud.com proton.me protonmail.com aol.com gmx.de gmx.net web.de
t-online.de posteo.de mail.ru yandex.ru qq.com 163.com naver.com daum.net yahoo.co.jp orange.fr free.fr laposte.net
libero.it seznam.cz wp.pl o2.pl btinternet.com sky.com bigpond.com xtra.co.nz uol.com.br bol.com.br terra.com.br
rediffmail.com yahoo.co.in hotmail.co.uk yahoo.com.ar fastmail.com zoho.com tutanota.com hey.com hotmail.fr live.com
msn.com
""")
UNIVERSITIES = words("""
ed.ac.uk ucl.ac.uk student.manchester.ac.uk ox.ac.uk mit.edu berkeley.edu alumni.stanford.edu nyu.edu utoronto.ca
mail.mcgill.ca unimelb.edu.au student.uq.edu.au uni-heidelberg.de tum.de ethz.ch usp.br unam.mx uct.ac.za
uonbi.ac.ke unilag.edu.ng u-tokyo.ac.jp snu.ac.kr iitb.ac.in kth.se uio.no helsinki.fi ku.dk student.uva.nl
kuleuven.be uw.edu.pl cuni.cz
""")
COMPANIES = words("""
northwind brightpath acme bluepeak kitefin orbitly tidewater greenleaf ironbark silverline pinecone quillstack
larkspur copperfield hollowtree sunmill zephyrworks meridian harbourview stonegate ambergrove cloudberry fernhill
goldcrest lumenly novaterra riverbend skyforge tallpine
""")
COMPANY_ENDINGS = words("""
com io co net org co.uk de fr es it nl pl se no dk fi pt com.br com.ar mx co.jp jp kr in com.au co.nz ca ng co.za ke
gh com.tr ae vn co.id ph ie ch at be cz gr hu ro
""")
HANDLES = words("""
sunny bluefox nightowl coffeelover pixel riverstone moonbeam tinker wanderer cobalt maple stardust quietstorm
lazycat oceanblue redkite bookworm trailrunner greenbean nomad ziggy skylark foxglove jellybean retro crimson
""")
JOBS = items("""
nurse, teacher, graphic designer, software engineer, accountant, student, chef, photographer, electrician,
pharmacist, architect, barista, carpenter, midwife, translator, data analyst, bus driver, vet, journalist, farmer,
dentist, plumber, retired teacher, PhD student
""")
RELATIVES = items("""
brother, sister, cousin, mum, dad, mother, father, son, daughter, husband, wife, partner, roommate, flatmate,
neighbour, uncle, aunt, grandmother, best friend, colleague, niece, nephew
""")
OLDER = {"mum", "dad", "mother", "father", "uncle", "aunt", "grandmother"}
YOUNGER = {"son", "daughter", "niece", "nephew"}
FEMALE_RELATIVES = {"sister", "mum", "mother", "daughter", "wife", "aunt", "grandmother", "niece"}
MALE_RELATIVES = {"brother", "dad", "father", "son", "husband", "uncle", "nephew"}
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
FILLERS = ["n/a", "-", "N/A", "unknown", "none", "", "—", "not given"]


@dataclass(frozen=True)
class City:
    name: str
    country: str
    region: str | None = None


def city_of(entry: str, country: str) -> City:
    if country in ("USA", "Canada", "Australia"):  # "Austin TX": the state comes last
        name, region = entry.rsplit(" ", 1)
        return City(name, country, region)
    return City(entry, country)


ALL_CITIES = [city_of(entry, country) for country, (entries,) in CITIES.items() for entry in entries]


# ====================================================================================================
# 2. Train / eval split of the pools. One rule for every pool: an item is held out for eval when its
# checksum says so (stable across runs and edits elsewhere). A held-out item that also shows inside a train
# one (Cruz in "Dela Cruz", Sofia the name and Sofia the city) would leak, so it stays in train.
# ====================================================================================================
def held_out(item: str) -> bool:
    return zlib.crc32(item.encode("utf-8")) % 5 == 0


ASCII = str.maketrans({"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "Ae", "ß": "ss", "đ": "d",
                       "Đ": "D", "ı": "i", "þ": "th", "Þ": "Th", "ð": "d", "Ð": "D"})


def ascii_fold(s: str) -> str:
    """'Kraków' -> 'Krakow', 'Łukasz' -> 'Lukasz': how a text without accents writes it."""
    return unicodedata.normalize("NFKD", s.translate(ASCII)).encode("ascii", "ignore").decode()


def feminine(family: str, culture: str) -> str:
    for old, new in FEMININE.get(culture, []):
        if old.endswith(" ") and family.startswith(old):
            return new + family[len(old):]
        if not old.endswith(" ") and family.endswith(old):
            return family[: -len(old)] + new
    return family


def split_pools():
    every = [x for parts in CULTURES.values() for part in parts for x in part]
    every += [feminine(x, c) for c, parts in CULTURES.items() for x in parts[2]]
    every += [c.name for c in ALL_CITIES]
    held = {x for x in every if held_out(x)}
    while True:
        train = {x for x in every if x not in held} | set(CITIES) | {c.region for c in ALL_CITIES if c.region}
        blob = " | ".join(sorted(train | {ascii_fold(x) for x in train}))
        leaks = {x for x in held if re.search(rf"(?<!\w){re.escape(x)}(?!\w)", blob)}
        if not leaks:
            return held
        held -= leaks


HELD = split_pools()
NAMES = {split: {culture: {part: [x for x in names if (x in HELD) == (split == "eval")]
                           for part, names in zip(("female", "male", "last"), parts, strict=True)}
                 for culture, parts in CULTURES.items()}
         for split in ("train", "eval")}
CITY_POOL = {"train": [c for c in ALL_CITIES if c.name not in HELD],
             "eval_only": [c for c in ALL_CITIES if c.name in HELD]}


# ====================================================================================================
# 3. Writing values, and reading them back (the self-check in section 8 uses the readers).
# ====================================================================================================
# Dates: the target is always ISO; the text is not. Slashed day/month forms only when the day is over 12,
# so they cannot be misread; dots always mean day.month.year, so any day goes.
DATE_FORMATS = ["month_day_year", "day_month_year", "ordinal_of", "month_ordinal", "iso", "slashed_ymd",
                "short_month", "abbr_dot", "dash_mon", "dd_mon_yyyy", "weekday", "dotted_dmy", "slashed_dmy",
                "slashed_mdy"]
NEEDS_DAY_OVER_12 = {"slashed_dmy", "slashed_mdy"}
MONTH_NUMBER = {m[:3].lower(): i for i, m in enumerate(MONTHS, start=1)}


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def write_date(rng, d: date, fmt: str | None = None) -> tuple[str, str]:
    """(format, text) for a date; a random format when none is given."""
    fmt = fmt or rng.choice([f for f in DATE_FORMATS if d.day > 12 or f not in NEEDS_DAY_OVER_12])
    month, mon, y, day = MONTHS[d.month - 1], MONTHS[d.month - 1][:3], d.year, d.day
    dot = "" if month == "May" else ("t." if month == "September" and rng.random() < 0.5 else ".")
    comma = rng.choice([",", ""])
    return fmt, {
        "month_day_year": f"{month} {day}, {y}",  # March 5, 2021
        "day_month_year": f"{day} {month} {y}",  # 5 March 2021
        "ordinal_of": f"{rng.choice(['', 'the '])}{ordinal(day)} of {month}, {y}",  # the 5th of March, 2021
        "month_ordinal": f"{month} {ordinal(day)}{comma} {y}",  # March 5th 2021
        "iso": d.isoformat(),  # 2021-03-05
        "slashed_ymd": f"{y}/{d.month:02d}/{day:02d}",  # 2021/03/05
        "short_month": f"{mon} {day}{comma} {y}",  # Mar 5 2021
        "abbr_dot": f"{mon}{dot} {day}, {y}",  # Jan. 5, 2021
        "dash_mon": f"{rng.choice([str(day), f'{day:02d}'])}-{mon}-{y}",  # 5-Mar-2021
        "dd_mon_yyyy": f"{day:02d} {mon} {y}",  # 05 Mar 2021
        "weekday": rng.choice([f"{WEEKDAYS[d.weekday()]}, {month} {day}, {y}",  # Friday, March 5, 2021
                               f"{WEEKDAYS[d.weekday()][:3]} {day} {month} {y}"]),  # Fri 5 March 2021
        "dotted_dmy": rng.choice([f"{day:02d}.{d.month:02d}.{y}", f"{day}.{d.month}.{y}"]),  # 05.03.2021
        "slashed_dmy": f"{day:02d}/{d.month:02d}/{y}",  # 25/03/2021
        "slashed_mdy": f"{d.month:02d}/{day:02d}/{y}",  # 03/25/2021
    }[fmt]


def read_date(text: str) -> date:
    """A written date back to a date: month words, or numbers as Y-M-D, D.M.Y or slashed with the day over 12."""
    words = [w for w in re.findall(r"[A-Za-z]+", text) if len(w) >= 3 and w[:3].lower() in MONTH_NUMBER]
    numbers = re.findall(r"\d+", text)
    year = int(next(n for n in numbers if len(n) == 4))
    rest = [int(n) for n in numbers if len(n) != 4]
    if words:
        return date(year, MONTH_NUMBER[words[0][:3].lower()], rest[0])
    if len(numbers[0]) == 4:
        return date(year, rest[0], rest[1])
    if "." in text:
        return date(year, rest[1], rest[0])
    assert (rest[0] > 12) != (rest[1] > 12), f"ambiguous date {text!r}"
    return date(year, rest[1], rest[0]) if rest[0] > 12 else date(year, rest[0], rest[1])


def random_date(rng, start: date, end: date) -> date:
    return start + timedelta(days=rng.randint(0, max(0, (end - start).days)))


UNITS = ["", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
TEENS = {18: "eighteen", 19: "nineteen"}


def age_in_words(n: int) -> str:
    """18..99 -> 'thirty-two'."""
    return TEENS.get(n) or TENS[n // 10] + (f"-{UNITS[n % 10]}" if n % 10 else "")


def read_age(text: str) -> int:
    """'34', '34th' or 'thirty-four' -> 34."""
    if text[:2].isdigit():
        return int(text[:2])
    return next(n for n in range(18, 100) if age_in_words(n) == text.lower())


def ascii_lower(s: str) -> str:
    """'Łukasz' -> 'lukasz', "O'Brien" -> 'obrien', 'de la Cruz' -> 'delacruz': as typed into an address."""
    return re.sub(r"[^a-z0-9-]", "", ascii_fold(s).lower())


def company_domain(rng) -> str:
    word = rng.choice(COMPANIES) + rng.choice(["", "", "", "-labs", "-studio", "-group", "-digital", "-health"])
    sub = rng.choice(["", "", "", "", "mail.", "eu.", "uk.", "corp.", "staff."])
    return f"{sub}{word}.{rng.choice(COMPANY_ENDINGS)}"


def make_email(rng, given: str, family: str) -> str:
    """An address the way people really have them: from the name in many ways, or a handle; many domains."""
    f = ascii_lower(given.split()[0]).replace("-", "")
    s = ascii_lower(family).replace("-", rng.choice(["", "-"])) or f
    n, yy = rng.randint(1, 999), rng.choice([rng.randint(60, 99), rng.randint(0, 9)])  # a number, a birth year
    tag = rng.choice(["shop", "news", "work", "billing", "signup", "2024", "apps"])  # plus-addressing
    local = rng.choice([
        f"{f}.{s}", f"{f}{s}", f"{f}_{s}", f"{f}-{s}", f"{s}.{f}", f"{f[0]}{s}", f"{f[0]}.{s}", f"{f}.{s}{yy:02d}",
        f"{f}{n}", f"{s}{f[0]}{n}", f"{f}+{tag}", f"{f}.{s}+{tag}", f"{rng.choice(HANDLES)}{n}",
        f"{rng.choice(HANDLES)}_{rng.choice(HANDLES)}", f"{f}{s[0]}", f"{f[:3]}{s[:3]}{yy:02d}", f"the{f}",
        f"{f}.{rng.choice('abcdefghjklmnprstw')}.{s}", f"{f[0]}{s[0]}{n}", f"{f}_{n}"])
    kind = rng.choices(["webmail", "company", "university"], weights=[60, 28, 12])[0]
    domain = {"webmail": rng.choice(WEBMAIL), "company": company_domain(rng),
              "university": rng.choice(UNIVERSITIES)}[kind]
    return f"{local}@{domain}"


def obfuscate(rng, email: str) -> str:
    """Written so that spam bots miss it; the gold stays the normal address."""
    local, domain = email.split("@")
    return rng.choice([
        f"{local.replace('.', ' dot ')} at {domain.replace('.', ' dot ')}",  # ana dot ruiz at gmail dot com
        f"{local} [at] {domain}", f"{local}(at){domain}", f"{local} (at) {domain.replace('.', ' (dot) ')}",
        f"{local} AT {domain.replace('.', ' DOT ')}", f"{local} [at] {domain.replace('.', ' [dot] ')}"])


def read_email(text: str) -> str:
    """An address as written back to the plain address: mailto:, <...>, (at), [dot] and ' at ' undone."""
    t = re.sub(r"^mailto:", "", text.strip()).strip("<>")
    def sign(m):
        return "@" if m[1].lower() == "at" else "."
    t = re.sub(r"\s*[\[(]\s*(at|dot)\s*[\])]\s*", sign, t, flags=re.IGNORECASE)  # [at] (dot)
    return re.sub(r"\s+(at|dot)\s+", sign, t, flags=re.IGNORECASE)  # " at ", " DOT "


def write_email(rng, email: str) -> tuple[str, str]:
    """(form, text): mostly plain, sometimes obfuscated, a mailto: link or in angle brackets."""
    form = rng.choices(["plain", "obfuscated", "mailto", "angle"], weights=[78, 100 * P_OBFUSCATED, 7, 7])[0]
    return form, {"plain": email, "obfuscated": obfuscate(rng, email), "mailto": f"mailto:{email}",
                  "angle": f"<{email}>"}[form]


def write_city(rng, city: City) -> tuple[str, str]:
    """(the city as written, what the text shows): 'Krakow' without accents, 'Porto, Portugal', 'Austin, TX'."""
    name = ascii_fold(city.name) if rng.random() < 0.3 else city.name
    r = rng.random() if city.country != city.name else 1  # no "Singapore, Singapore"
    if city.region and r < 0.45:
        return name, f"{name}, {city.region}"
    return name, f"{name}, {city.country}" if r < 0.15 else f"{name} ({city.country})" if r < 0.2 else name


def fill_digits(rng, pattern: str) -> str:
    return re.sub("#", lambda _: str(rng.randint(0, 9)), pattern)


PHONES = ["+44 7### ######", "+1 (###) ###-####", "+49 15# ########", "+33 6 ## ## ## ##", "+81 90-####-####",
          "+234 80# ### ####", "+55 11 9####-####", "+91 9#### #####", "+61 4## ### ###", "+254 7## ######",
          "07### ######", "(###) ###-####", "+47 ### ## ###", "+48 ### ### ###"]


# ====================================================================================================
# 4. People.
# ====================================================================================================
@dataclass
class Person:
    name: str  # as the text writes it (the gold, unless the whole text is lowercased)
    given: str  # what an e-mail sign-off uses
    family: str
    she: bool
    title: str | None  # "Dr." in the text; never in the gold
    age: int | None
    city: City | None
    email: str | None
    signup: date | None


def pick(rng, split: str, culture: str, part: str) -> str:
    """A name part from this split's pool of that culture, or of any culture if that one has none left."""
    pool = NAMES[split][culture][part] or [x for c in NAMES[split].values() for x in c[part]]
    return rng.choice(pool)


def make_person(rng, split: str) -> Person:
    culture = rng.choice(sorted(CULTURES))
    she = rng.random() < 0.5
    gender = "female" if she else "male"

    def family_name():
        name = pick(rng, split, culture, "last")
        return feminine(name, culture) if she else name

    given, family, second, r = pick(rng, split, culture, gender), family_name(), family_name(), rng.random()
    if culture in TWO_SURNAMES and r < 0.3 and second != family:  # a second family name: "García Márquez"
        family += " " + second
    elif culture not in FAMILY_FIRST and r > 0.95 and second != family:  # double-barrelled: "Nowak-Zielińska"
        family += "-" + second
    family_first = rng.random() < FAMILY_FIRST.get(culture, 0)  # "Nguyễn Linh", "Nagy Eszter"
    middle, r = None, rng.random()
    if r < 0.12 and not family_first:
        middle = rng.choice("ABCDEFGHJKLMNPRSTVW") + "."
    elif r < 0.25 and culture not in NO_MIDDLE:
        middle = pick(rng, split, culture, gender)
        middle = None if middle == given else middle
    first_part = " ".join(p for p in (given, middle) if p)
    name = f"{family} {first_part}" if family_first else f"{first_part} {family}"
    if rng.random() < 0.06:  # typed without accents: the gold is the name as written
        name, given, family = ascii_fold(name), ascii_fold(given), ascii_fold(family)
    only_name = rng.random() < P_ONLY_NAME

    def maybe(value):  # every value is drawn, even one left out, so the random stream stays simple
        return None if only_name or rng.random() < P_MISSING else value

    pool = CITY_POOL["eval_only"] if split == "eval" and rng.random() < P_HELD_OUT else CITY_POOL["train"]
    title = rng.choice(TITLES[gender]) if rng.random() < 0.1 else None
    return Person(name, given, family, she, title, age=maybe(rng.randint(18, 90)), city=maybe(rng.choice(pool)),
                  email=maybe(make_email(rng, given, family)),
                  signup=maybe(random_date(rng, FIRST_SIGNUP, LAST_SIGNUP)))


# ====================================================================================================
# 5. Phrasings: many ways to say each fact, in the first person ("i"), about someone ("they"), in chat
# (first person plus chat-only ones), and as fragments for bullets and one-line cards. A phrasing may say
# several facts at once. {age} is digits or words, {age_d} digits; {city} may carry a country, {city0} not;
# {email_p} is always the plain address. Phrasings, labels and questions are split like every pool.
# ====================================================================================================
SAY = {"i": [
    # name
    "I'm {name}.", "My name is {name}.", "This is {name}.", "{name} here.", "It's {name}.", "Name's {name}.",
    "I am {name}.", "{name} speaking.", "Hello, I'm {name}.", "You're talking to {name}.", "Hi, {name} again.",
    "{name} writing.", "Just me, {name}.", "My full name is {name}.", "Greetings, this is {name}.",
    "I'm {name}, {age}.", "I'm {name} ({age_d}).", "I'm {name} from {city}.", "This is {name} in {city}.",
    "My name is {name} and I'm {age}.", "My name is {name} and I live in {city}.", "I'm {name} ({email}).",
    "I'm {name}, a {age}-year-old {job} from {city}.", "{name} here, writing from {city}.",
    "{name} here, {age_d} and based in {city}.",
    # age
    "I'm {age}.", "I am {age} years old.", "I'm {age} years old.", "I turned {age} last week.", "I just turned {age}.",
    "I'm a {age}-year-old {job}.", "I'm {age_d} y/o.", "Just so you know, I'm {age}.", "I am aged {age_d}.",
    "At {age}, I'm new to all this.", "I'm {age} (yes, really).", "Being {age}, I prefer email to calls.",
    "I'm {age} and new to this.", "As a {age}-year-old, I expected more.", "My age is {age_d}.",
    "I recently turned {age}.", "I celebrated my {age_nth} birthday last month.", "I'm {age} years young.",
    "For the form: I'm {age}.", "I'm {age_d}, if that matters.", "Age-wise, I'm {age}.", "I'm {age_d}yo.",
    "I'm {age} and I live in {city}.", "I'm a {age}-year-old {job} living in {city}.",
    # city
    "I live in {city}.", "I'm based in {city}.", "I'm living in {city} these days.", "I'm from {city}.",
    "I'm writing from {city}.", "Home for me is {city}.", "I call {city} home.", "I'm a {city0}-based {job}.",
    "I moved to {city} two years ago.", "I reside in {city}.", "Currently living in {city}.", "Greetings from {city}!",
    "My home is in {city}.", "I've lived in {city} for {n} years.", "Here in {city} it's raining again.",
    "I'm a {city0} local.", "We live in {city}.", "I settled in {city} last year.", "{city} is where I live.",
    "Based in {city}.", "Born and raised in {city}, still here.", "I moved from {other_city} to {city} last year.",
    "I live in {city}, not far from the centre.", "I'm down in {city}.", "I live in {city} and my email is {email}.",
    # email
    "My email is {email}.", "You can reach me at {email}.", "Email me at {email}.", "Please reply to {email}.",
    "My email address is {email}.", "Write to me at {email}.", "Contact me: {email}.", "Best way to reach me: {email}.",
    "I use {email} for everything.", "Drop me a line at {email}.", "The account email is {email}.",
    "My login is {email}.", "Send the invoice to {email}.", "{email} is my personal address.", "Reach me on {email}.",
    "Ping me at {email}.", "Please use {email} from now on.", "It's {email} if you need it.",
    "Feel free to email {email}.", "Updated email: {email}.", "I'm on {email}.", "My e-mail is {email}.",
    "Here's my email: {email}.", "Use {email} to contact me.", "You'll find me at {email}.",
    "Emails to {email} reach me fastest.", "Confirmations can go to {email}.",
    "I signed up on {date} with {email}.",
    # signup date
    "I signed up on {date}.", "I joined on {date}.", "I registered on {date}.", "I created my account on {date}.",
    "I've been a member since {date}.", "I've been a customer since {date}.", "My account was opened on {date}.",
    "I subscribed on {date}.", "I've been with you since {date}.", "I made my account on {date}.",
    "Member since {date}.", "I first signed up back on {date}.", "I opened the account on {date}.",
    "I've had the account since {date}.", "I became a member on {date}.", "I registered back on {date}, I think.",
    "Signed up {date}.", "I joined the platform on {date}.", "Customer since {date}, by the way.",
    "I was onboarded on {date}.", "My subscription started on {date}.", "I joined you guys on {date}.",
    "The account dates from {date}.", "I set up my account on {date}.",
    "I've been subscribed since {date}.", "I got my account on {date}.", "I signed up for the service on {date}.",
    "I've been a member since {date} and I'm {age} now.",
], "they": [
    "{name} got in touch today.", "Customer: {name}.", "{name} called in.", "Spoke with {name}.",
    "{name} reached out via chat.", "New member: {name}.", "{name} wrote to support.", "Caller was {name}.",
    "Update on {name}.", "{name} came by the front desk.", "Lead: {name}.", "Ticket raised by {name}.",
    "{name} is a new user.", "Met {name} today.", "{name} asked about a refund.", "{name} filled in the form.",
    "Meet {name}.", "Account holder: {name}.", "{name} emailed us this morning.",
    "{name} ({age_d}) called in.", "{name}, {age}, lives in {city}.", "{name} from {city} got in touch.",
    "{city0} resident {name} wrote in.", "{name}, a {age}-year-old {job}, signed up on {date}.",
    "{name} ({email}) reached out.", "{name}, who is {age}, joined on {date}.",
    "{name} of {city} called about billing.",
    "{She} is {age}.", "{She} is {age} years old.", "{She}'s {age}.", "{She} turned {age} last week.",
    "{She} just turned {age}.", "{She} is a {age}-year-old {job}.", "Age given as {age_d}.",
    "{She} gave {her} age as {age}.", "{She} says {she} is {age}.", "{She} is aged {age_d}.",
    "{Her} stated age is {age_d}.", "{She} mentioned being {age}.", "Customer is {age_d} y/o.",
    "{She}'s {age_d}, per the form.", "{She} recently turned {age}.", "Confirmed age: {age_d}.",
    "Age on file: {age_d}.", "{She} is {age} (confirmed).", "{She} celebrated {her} {age_nth} birthday recently.",
    "Aged {age_d}.", "{She} told us {she}'s {age}.", "{She} is {age} and lives in {city}.",
    "{She} lives in {city}.", "{She} is based in {city}.", "{She} is from {city}.", "{She} resides in {city}.",
    "{She} moved to {city} recently.", "{She} calls {city} home.", "{She} lives in {city} with {her} family.",
    "{She}'s a {city0}-based {job}.", "Location: {city}.", "{She} is currently living in {city}.",
    "Home city: {city}.", "{She} is located in {city}.", "Lives in {city}.", "{She} has lived in {city} for {n} years.",
    "Resident of {city}.", "{Her} home is in {city}.", "{She} is writing from {city}.",
    "{She} relocated to {city} last spring.", "{She} settled in {city} after university.", "Based out of {city}.",
    "{She} moved from {other_city} to {city} in the spring.", "{She} is a {city0} local.",
    "{She} lives in {city}; email {email}.",
    "{Her} email is {email}.", "{She} can be reached at {email}.", "Contact: {email}.", "Email on file: {email}.",
    "Reply to {email}.", "{She} asked us to use {email}.", "{She} registered with {email}.",
    "Preferred email: {email}.", "Reach {him} at {email}.", "{Her} login is {email}.", "{She} writes from {email}.",
    "Send updates to {email}.", "Account email: {email}.", "{Her} personal address is {email}.",
    "{She} gave {email} as {her} contact.", "Mail goes to {email}.", "{She} uses {email}.",
    "Drop {him} a line at {email}.", "{Her} e-mail: {email}.", "{She} confirmed {her} address: {email}.",
    "{Her} email address: {email}.", "Emails go to {email}.", "{She} prefers email: {email}.", "Best contact: {email}.",
    "{She} joined on {date} using {email}.",
    "{She} signed up on {date}.", "{She} joined on {date}.", "{She} registered on {date}.", "Account created {date}.",
    "Account opened on {date}.", "Member since {date}.", "Customer since {date}.",
    "{She} has been a member since {date}.", "{She} was onboarded on {date}.", "{She} subscribed on {date}.",
    "{She} created {her} account on {date}.", "Signed up {date}.", "Registered {date}.", "Joined {date}.",
    "{She} became a customer on {date}.", "{Her} account dates from {date}.", "{She} opened {her} account on {date}.",
    "{She} has been with us since {date}.", "Signup date: {date}.", "Onboarded {date}.", "Subscriber since {date}.",
    "{She} set up {her} account on {date}.", "Registration date: {date}.", "{She} has been subscribed since {date}.",
]}
SAY["chat"] = SAY["i"] + [
    "im {name}", "{name} here 👋", "it's {name} lol", "hiii {name} here", "{name} again 🙃",
    "{age_d} btw", "{age_d} y/o", "turned {age} last wk", "{age_d}yo fwiw", "im {age}",
    "📍 {city}", "living in {city} these days", "{city0} based", "from {city} 🙂", "in {city} since forever",
    "my email's {email}", "email: {email}", "hit me up at {email}", "📧 {email}", "mail me on {email}",
    "joined {date}", "signed up {date} lol", "been here since {date}", "member since {date} 🎉", "made my acct {date}",
]
FRAG = {
    "name": ["{name}"],
    "age": ["{age} years old", "age {age_d}", "aged {age_d}", "{age_d} y/o", "({age_d})", "{age_d}yo", "{age_d}",
            "{age}", "a {age}-year-old {job}", "{age_d} yrs", "age: {age_d}", "{age_d} years"],
    "city": ["lives in {city}", "based in {city}", "{city}", "from {city}", "📍 {city}", "{city0} resident",
             "home: {city}", "loc: {city}", "in {city}", "living in {city}", "{city0}-based", "resides in {city}"],
    "email": ["{email}", "email: {email}", "✉ {email}", "mail {email}", "📧 {email}", "e: {email}", "<{email_p}>",
              "email {email}", "contact: {email}", "reach at {email}"],
    "signup_date": ["joined {date}", "member since {date}", "signed up {date}", "customer since {date}",
                    "registered {date}", "since {date}", "acct created {date}", "onboarded {date}",
                    "subscribed {date}", "account opened {date}", "signup: {date}"],
}
LABELS = {
    "name": items("Name, Full name, Customer, Contact, Member, User, Applicant, Client, Guest, Customer name, "
                  "Account holder, Submitted by, Your name, Attendee, Sender"),
    "age": items("Age, Age (years), Years old, How old, Age in years, Your age, Stated age, Age (yrs)"),
    "city": items("City, Location, Home city, City of residence, Lives in, Based in, Town, Hometown, Residence, "
                  "Current city, Home, Loc, 📍, Where, City/Town"),
    "email": items("Email, E-mail, Mail, Email address, Contact email, Your email, Personal email, E-mail address, "
                   "✉, Reply-to, Login email, Email (personal)"),
    "signup_date": items("Signup date, Signed up, Joined, Member since, Registered, Account created, "
                         "Registration date, Customer since, Onboarded, Subscribed, Created, Join date, Sign-up, "
                         "Account opened"),
}
KEYS = {
    "name": items("name, full_name, customer, user, customer_name, display_name, member, contact_name"),
    "age": items("age, age_years, user_age, age_yrs"),
    "city": items("city, location, loc, home_city, residence, city_of_residence, based_in, town"),
    "email": items("email, mail, email_address, contact_email, e_mail, login, user_email"),
    "signup_date": items("signup_date, signed_up, joined, created_at, registered_at, member_since, join_date, "
                         "onboarded_on, subscribed_on, signup"),
}
QUESTIONS = {
    "name": ["What's your name?", "Name?", "Your full name?", "Who am I speaking with?", "May I have your name?",
             "Full name, please?"],
    "age": ["How old are you?", "Age?", "Your age?", "And your age?", "May I ask your age?"],
    "city": ["Where do you live?", "City?", "Where are you based?", "Where are you from?", "Home town?",
             "Which city do you live in?"],
    "email": ["Email?", "What's your email?", "Best email to reach you?", "Email address?",
              "Where should we send the confirmation?", "Which address is on the account?"],
    "signup_date": ["When did you sign up?", "Signup date?", "When did you join?", "Member since when?",
                    "When was the account created?", "When did you register?"],
}
SLOT_FIELD = {"name": "name", "age": "age", "age_d": "age", "age_nth": "age", "city": "city", "city0": "city",
              "email": "email", "email_p": "email", "date": "signup_date"}
SLOT = re.compile(r"\{(\w+)\}")


def fields_of(phrase: str) -> set:
    return {SLOT_FIELD[s] for s in SLOT.findall(phrase) if s in SLOT_FIELD}


# ====================================================================================================
# 6. Distractors: true facts about something else, in each voice or as a label and value, and what a
# careless model might copy from them ("steal"), which the preference data uses as a wrong answer.
# ====================================================================================================
@dataclass
class Fact:
    kind: str
    i: str
    they: str
    pair: tuple
    steal: dict = field(default_factory=dict)


DISTRACTOR_KINDS = ["relative", "colleague", "contact", "order", "money", "other_date", "place", "other_person",
                    "age_hint", "title"]


def relative_age(rng, rel: str, age: int | None) -> int:
    base = age or rng.randint(30, 60)
    if rel in OLDER and base + 20 <= 95:
        return rng.randint(base + 20, min(95, base + 38))
    if rel in YOUNGER and base >= 22:
        return rng.randint(max(1, base - 40), base - 18)
    return rng.choice([a for a in range(max(18, base - 12), min(90, base + 12) + 1) if a != age])


def distractor(d, kind: str) -> Fact:
    rng, p = d.rng, d.p
    She, Her, her, him = d.extra("She"), d.extra("Her"), d.extra("her"), d.extra("him")
    if kind == "relative":
        rel, city = rng.choice(RELATIVES), d.other_city()
        who = d.other_given("female" if rel in FEMALE_RELATIVES else "male" if rel in MALE_RELATIVES else None)
        age, email, kid = relative_age(rng, rel, p.age), d.other_email(), rng.randint(2, 14)
        return rng.choice([
            Fact(kind, f"My {rel}, {age}, lives in {city}.", f"{Her} {rel} ({age}) lives in {city}.",
                 ("Emergency contact", f"{who} ({rel}), {age}, {city}"), {"age": age, "city": city}),
            Fact(kind, f"My {rel} is {age} and wants an account too.", f"{Her} {rel}, aged {age}, may join as well.",
                 ("Household member", f"{rel}, {age}"), {"age": age}),
            Fact(kind, f"My {rel} lives in {city}.", f"{Her} {rel} is based in {city}.",
                 ("Billing contact", f"{who}, {city}"), {"city": city}),
            Fact(kind, f"I'm visiting my {rel} in {city} next month.", f"{She} is visiting {her} {rel} in {city}.",
                 ("Next of kin", f"{who} ({rel}), {city}"), {"city": city}),
            Fact(kind, f"My {rel} uses {email}, please don't mix us up.",
                 f"{Her} {rel}'s address {email} is also on file.",
                 ("Family member email", email), {"email": email}),
            Fact(kind, f"My kids are {kid} and {kid + 3}.", f"{She} has two kids, {kid} and {kid + 3}.",
                 ("Children", f"2 (ages {kid} and {kid + 3})"), {"age": kid + 3})])
    if kind == "colleague":
        who, email = d.other_name(), d.other_email()
        return rng.choice([
            Fact(kind, f"Please cc my manager at {email}.", f"{Her} manager ({email}) is in cc.", ("CC", email),
                 {"email": email}),
            Fact(kind, f"My colleague {who} ({email}) is in cc.", f"Copying in {her} colleague {who}, {email}.",
                 ("CC", f"{who} <{email}>"), {"email": email, "name": who}),
            Fact(kind, f"My partner uses {email}, so don't mix us up.",
                 f"{Her} spouse's address ({email}) is on file too.",
                 ("Partner email", email), {"email": email}),
            Fact(kind, f"Invoices go to our finance team, {email}.", f"Invoices go to {her} employer: {email}.",
                 ("Billing email", email), {"email": email})])
    if kind == "contact":  # ways to reach them that are not an e-mail address
        phone, handle = fill_digits(rng, rng.choice(PHONES)), f"@{rng.choice(HANDLES)}{rng.randint(1, 99)}"
        site = f"www.{ascii_lower(p.family).replace('-', '')}{rng.choice(['.com', '-studio.com', '.design', '.net'])}"
        return rng.choice([Fact(kind, f"My number is {phone}.", f"Callback number: {phone}.", ("Phone", phone)),
                           Fact(kind, f"I'm {handle} on Instagram.", f"{Her} Instagram is {handle}.",
                                ("Instagram", handle)),
                           Fact(kind, f"My portfolio is at {site}.", f"{Her} website: {site}.", ("Website", site)),
                           Fact(kind, f"You can text me at {phone}.", f"{She} left {her} number, {phone}.",
                                ("Mobile", phone)),
                           Fact(kind, f"Call me on {phone} after 6.", f"Best reached on {phone}.", ("Tel", phone))])
    if kind == "order":
        n = rng.randint(10000, 99999)
        ref = rng.choice([f"#{n}", f"ORD-{rng.randint(2019, 2026)}-{n}", f"INV-{n:06d}", f"CS-{n % 9000 + 1000}"])
        return rng.choice([Fact(kind, f"This is about order {ref}.", f"Ticket refers to order {ref}.", ("Order", ref)),
                           Fact(kind, f"My reference is {ref}.", f"{She} quoted reference {ref}.", ("Reference", ref)),
                           Fact(kind, f"Invoice {ref} is still open.", f"Invoice {ref} is unpaid.", ("Invoice", ref))])
    if kind == "money":
        q = rng.randint(2, 40)
        cents = rng.choice(["00", "99", "50"])
        price = rng.choice(["€", "$", "£", "R$ ", "₹", "CHF "]) + f"{rng.randint(5, 499)}.{cents}"
        plan = rng.choice(["Basic", "Pro", "Family", "Business", "Premium", "Student"])
        return rng.choice([
            Fact(kind, f"I paid {price} for {q} seats.", f"{She} paid {price} for {q} seats.", ("Amount", price)),
            Fact(kind, f"We need {q} licences on the {plan} plan.", f"{She} wants {q} licences ({plan}).",
                 ("Plan", f"{plan}, {q} seats")),
            Fact(kind, f"The {plan} plan at {price} a month is too much.",
                 f"{She} finds {plan} at {price}/month too pricey.",
                 ("Monthly price", price))])
    if kind == "other_date":
        what = rng.choice(["last_login", "renewal", "delivery", "appointment", "order", "trial", "birthday",
                           "born", "tenure"] + ([] if p.signup else ["partial"] * 3))
        if what == "partial":  # a signup without a full date: the signup_date stays null
            y, m = rng.randint(2010, 2025), rng.choice(MONTHS)
            i, they, label, value = rng.choice([
                (f"I've been a member since {y}.", f"Member since {y}.", "Member since", str(y)),
                (f"I joined in {m} {y}.", f"{She} joined in {m} {y}.", "Joined", f"{m} {y}"),
                (f"I signed up back in {y}.", f"{She} signed up in {y}.", "Signed up", str(y)),
                (f"I've been a customer since {m[:3]} {y}.", f"Customer since {m[:3]} {y}.", "Customer since",
                 f"{m[:3]} {y}")])
            return Fact(kind, i, they, (label, value), {"signup_date": f"{y}-{MONTHS.index(m) + 1:02d}-01"})
        if what == "tenure":  # a duration, not a date (it agrees with the signup date when there is one)
            n = max(1, TODAY.year - p.signup.year) if p.signup else rng.randint(2, 12)
            return Fact(kind, f"I've been a customer for {n} years.", f"{She} has been with us for {n} years.",
                        ("Customer for", f"{n} years"))
        if what == "birthday":  # no year, so not a full date, but a date
            m, dd = rng.choice(MONTHS), rng.randint(1, 28)
            w = rng.choice([f"{dd} {m}", f"{m} {dd}", f"{m} {ordinal(dd)}"])
            return Fact(kind, f"My birthday is on {w}, by the way.", f"{Her} birthday is {w}.", ("Birthday", w))
        if what == "born":  # a full date of birth agrees with the age, when the text gives one
            age = p.age or rng.randint(18, 80)
            dt = random_date(rng, date(TODAY.year - age - 1, TODAY.month, TODAY.day) + timedelta(days=1),
                             date(TODAY.year - age, TODAY.month, TODAY.day))
            w = write_date(rng, dt)[1]
            return Fact(kind, f"I was born on {w}.", f"{She} was born on {w}.", ("Date of birth", w),
                        {"signup_date": dt.isoformat(), **({} if p.age else {"age": age})})
        start = {"last_login": p.signup or FIRST_SIGNUP, "order": date(2023, 1, 1)}.get(what, TODAY - timedelta(40))
        dt = random_date(rng, start + timedelta(days=1), start + timedelta(days=700))
        w = write_date(rng, dt)[1]
        i, they, label = {
            "last_login": (f"I last logged in on {w}.", f"{She} last logged in on {w}.", "Last login"),
            "renewal": (f"My plan renews on {w}.", f"{Her} plan renews on {w}.", "Renewal date"),
            "delivery": (f"My parcel is due on {w}.", f"Delivery scheduled for {w}.", "Delivery date"),
            "appointment": (f"My appointment is on {w}.", f"{She} has an appointment on {w}.", "Appointment"),
            "order": (f"I placed the order on {w}.", f"{She} ordered on {w}.", "Order date"),
            "trial": (f"My trial ends on {w}.", f"{Her} trial ends {w}.", "Trial ends")}[what]
        return Fact(kind, i, they, (label, w), {"signup_date": dt.isoformat()})
    if kind == "place":  # cities that are not where the person lives: work, a branch, a trip, one they left
        c, y = d.other_city(), rng.randint(2005, 2024)
        i, they, label = rng.choice([
            (f"I work at the {c} office.", f"{She} works out of our {c} office.", "Office"),
            (f"My account is with the {c} branch.", f"Handled by the {c} branch.", "Branch"),
            (f"I'm visiting {c} next week.", f"{She} is visiting {c} this week.", "Travelling to"),
            (f"I moved away from {c} in {y}.", f"{She} left {c} in {y}.", "Previous city"),
            (f"I usually shop at your {c} store.", f"{She} shops at the {c} store.", "Store"),
            (f"I'm flying to {c} on Friday.", f"{She} flies to {c} on Friday.", "Trip"),
            (f"I met your team at the fair in {c}.", f"Met {him} at the {c} trade fair.", "Met at"),
            (f"I commute to {c} for work.", f"{She} commutes to {c} for work.", "Work location")])
        return Fact(kind, i, they, (label, c), {"city": c})
    if kind == "other_person":
        who, age = d.other_name(), relative_age(rng, "friend", p.age)
        return rng.choice([
            Fact(kind, f"I was referred by {who}.", f"{She} was referred by {who}.", ("Referred by", who),
                 {"name": who}),
            Fact(kind, f"My friend {who} ({age}) wants to join too.", f"{Her} friend {who}, {age}, may join too.",
                 ("Friend", f"{who}, {age}"), {"name": who, "age": age}),
            Fact(kind, f"Last time I spoke to {who}.", f"{She} previously spoke to {who}.", ("Previous agent", who),
                 {"name": who})])
    # age_hint: "born in 1987" or "in my forties" is not a stated age (never computed); it agrees with the age
    age = p.age or rng.randint(20, 79)
    y, decade = TODAY.year - age - rng.randint(0, 1), TENS[age // 10][:-1] + "ies"  # twenties
    if not p.age and rng.random() < 0.3:
        return Fact(kind, f"I'm in my {decade}.", f"{She} is in {her} {decade}.",
                    ("Age range", f"{age // 10}0-{age // 10}9"), {"age": age})
    return Fact(kind, f"I was born in {y}.", f"{She} was born in {y}.", ("Year of birth", str(y)),
                {} if p.age else {"age": TODAY.year - y})



# ====================================================================================================
# 7. A draft: one text being written. It knows how each field is spelled this time, writes phrasings and
# label/value pairs, places the distractors, and records every surface it showed (for the self-check).
# ====================================================================================================
class Draft:
    def __init__(self, rng, split: str, p: Person):
        self.rng, self.split, self.p, self.lower, self.shown = rng, split, p, False, []
        self.fields = [f for f, v in zip(FIELDS, (p.name, p.age, p.city, p.email, p.signup), strict=True) if v]
        self.info = {"frame": None, "family": None, "phrasings": [], "date_format": None, "date_text": None,
                     "email_form": None, "email_text": None, "city_held_out": bool(p.city and p.city.name in HELD),
                     "distractors": ["title"] if p.title else [], "steal": {}}
        self.surface = {"name": f"{p.title} {p.name}" if p.title else p.name}
        if p.age:
            self.surface.update(age=age_in_words(p.age) if rng.random() < 0.25 else str(p.age), age_d=str(p.age),
                                age_nth=ordinal(p.age))
        if p.city:
            self.city, self.surface["city"] = write_city(rng, p.city)
            self.surface["city0"] = self.city
        if p.email:
            self.info["email_form"], self.surface["email"] = write_email(rng, p.email)
            self.info["email_text"], self.surface["email_p"] = self.surface["email"], p.email
        if p.signup:
            self.info["date_format"], self.surface["date"] = write_date(rng, p.signup)
            self.info["date_text"] = self.surface["date"]
        kinds = rng.sample(DISTRACTOR_KINDS[:-1], rng.choices(*N_DISTRACTORS)[0])
        self.pending = [distractor(self, kind) for kind in kinds]

    # --- values
    def show(self, slot: str) -> str:
        self.shown.append((SLOT_FIELD[slot], self.surface[slot]))
        return self.surface[slot]

    def extra(self, slot: str) -> str:
        she = self.p.she
        if slot == "other_city":  # "moved from X to Y": a distractor and the real value together
            c = self.other_city()
            self.info["distractors"].append("place")
            self.info["steal"]["city"] = c
            return c
        return {"She": "She" if she else "He", "she": "she" if she else "he", "Her": "Her" if she else "His",
                "her": "her" if she else "his", "him": "her" if she else "him", "job": self.rng.choice(JOBS),
                "n": str(self.rng.randint(2, 15))}[slot]

    def other_city(self) -> str:
        pool = CITY_POOL["train"] + (CITY_POOL["eval_only"] if self.split == "eval" else [])
        return self.rng.choice([c.name for c in pool if not self.p.city or c.name != self.p.city.name])

    def other_given(self, gender: str | None = None) -> str:
        gender = gender or self.rng.choice(["female", "male"])
        return pick(self.rng, self.split, self.rng.choice(sorted(CULTURES)), gender)

    def other_name(self) -> str:
        culture = self.rng.choice(sorted(CULTURES))
        return f"{self.other_given()} {pick(self.rng, self.split, culture, 'last')}"

    def other_email(self) -> str:
        while (email := make_email(self.rng, self.other_given(), self.other_name().split()[-1])) == self.p.email:
            pass
        return email

    # --- phrasings
    def choose(self, options: list[str]) -> str:
        """Train never sees a held-out option; eval prefers them."""
        seen, held = [o for o in options if not held_out(o)], [o for o in options if held_out(o)]
        if self.split == "eval" and held and (not seen or self.rng.random() < P_HELD_OUT):
            seen = held
        choice = self.rng.choice(seen)
        self.info["phrasings"].append(choice)
        return choice

    def fill(self, phrase: str) -> str:
        text = SLOT.sub(lambda m: self.show(m[1]) if m[1] in SLOT_FIELD else self.extra(m[1]), phrase)
        return re.sub(r"\b([Aa]) (?=(8|18|11|eight)[\w-]*-year-old)", r"\1n ", text)  # an 80-year-old

    def take(self, kind: str | None = None) -> list[Fact]:
        """Hand the pending distractors (or those of one kind) to a frame, which must place them."""
        taken = [f for f in self.pending if kind in (None, f.kind)]
        self.pending = [f for f in self.pending if f not in taken]
        self.info["distractors"] += [f.kind for f in taken]
        for f in taken:
            self.info["steal"].update(f.steal)
        return taken

    def sentences(self, voice: str, fields=None) -> list[str]:
        """Each field said once (in random order, the name first when speaking about someone), plus distractors."""
        remaining, out = set(self.fields if fields is None else fields), []
        while remaining:
            f = "name" if voice == "they" and "name" in remaining else self.rng.choice(sorted(remaining))
            phrase = self.choose([s for s in SAY[voice] if f in fields_of(s) and fields_of(s) <= remaining])
            out.append(self.fill(phrase))
            remaining -= fields_of(phrase)
        for fact in self.take():
            out.insert(self.rng.randint(1 if voice == "they" and out else 0, len(out)),
                       fact.i if voice in ("i", "chat") else fact.they)
        return out

    def frag(self, f: str) -> str:
        return self.fill(self.choose(FRAG[f]))

    def pairs(self, keys: dict, fields=None, fillers: float = 0.3) -> list[tuple[str, str]]:
        """(label, value) for each field, name first most often; a missing field sometimes shows as 'n/a'."""
        order = [f for f in FIELDS if f in (self.fields if fields is None else fields)]
        self.rng.shuffle(order)
        if "name" in order and self.rng.random() < 0.7:
            order.remove("name")
            order.insert(0, "name")
        slot = {"name": "name", "age": "age_d", "city": "city", "email": "email", "signup_date": "date"}
        out = [(self.choose(keys[f]), self.show(slot[f])) for f in order]
        for f in FIELDS[1:]:
            if f not in self.fields and self.rng.random() < fillers:
                out.insert(self.rng.randint(1, len(out)), (self.choose(keys[f]), self.rng.choice(FILLERS)))
        snake = keys is KEYS
        for fact in self.take():
            label = re.sub(r"\W+", "_", fact.pair[0].lower()).strip("_") if snake else fact.pair[0]
            out.insert(self.rng.randint(1, len(out)), (label, fact.pair[1]))
        return out


# ====================================================================================================
# 8. Frames: the kind of text. Each writes a whole text from a draft. Weight 0 = held out for eval.
# ====================================================================================================
FRAMES = {}  # name -> (writer, family, weight)


def frame(name: str, family: str, weight: float):
    def register(writer):
        FRAMES[name] = (writer, family, weight)
        return writer
    return register


REASONS_I = ["I can't log in anymore.", "Can you cancel my renewal?", "Quick question about my invoice.",
             "The export button does nothing.", "Please update my details.", "I'd like to upgrade my plan.",
             "I was charged twice this month.", "The app keeps crashing on my phone.", "Just checking in."]
REASONS_THEY = ["Wants a refund.", "Asked about the annual plan.", "Reported a login problem.",
                "Requested a copy of an invoice.", "Complained about slow delivery.", "Interested in the team plan."]
GREETINGS = ["Hi,", "Hello,", "Hi there,", "Dear Support,", "Hello team,", "Good morning,", "Hey,",
             "Dear Sir or Madam,", "To whom it may concern,"]
SIGNOFFS = ["Best,", "Thanks,", "Kind regards,", "Cheers,", "Regards,", "Many thanks,", "Best wishes,", "Thank you,"]
SUBJECTS = ["Question about my account", "Billing issue", "Can't log in", "Update my details", "Re: your order",
            "Cancel subscription", "Hello!", "Invoice request", "Feedback", "Fwd: registration"]


def paragraphs(rng, parts: list[str]) -> str:
    cuts = sorted(rng.sample(range(1, len(parts)), min(len(parts) - 1, rng.randint(0, 2)))) if len(parts) > 1 else []
    return "\n\n".join(" ".join(parts[a:b]) for a, b in zip([0, *cuts], [*cuts, len(parts)], strict=True))


def unstop(sentence: str) -> str:
    """Drop the final full stop, as chats do, but not the one of an initial ("... Hoàng Phương K.")."""
    return re.sub(r"(?<! [A-Z])[.!]$", "", sentence)


def some_time(rng) -> str:
    return f"{rng.randint(7, 22):02d}:{rng.randint(0, 59):02d}"


@frame("email", "email", 3)
def email_frame(d: Draft) -> str:
    rng, fields, head = d.rng, set(d.fields), []
    if rng.random() < 0.75:  # most pasted e-mails keep their headers
        addr = d.show("email_p") if "email" in fields and rng.random() < 0.5 else None
        named = not addr or rng.random() < 0.7
        fields -= {"email"} if addr else set()
        fields -= {"name"} if named else set()
        head.append("From: " + (f"{d.show('name')} <{addr}>" if named and addr else d.show("name") if named else addr))
        head.append(f"To: {rng.choice(['support', 'help', 'hello', 'billing', 'accounts'])}@{company_domain(rng)}")
        head += [f"Cc: {fact.pair[1]}" for fact in d.take("colleague")]  # a colleague is cc'd, not mentioned
        if rng.random() < 0.3:
            head.append(f"Date: {write_date(rng, random_date(rng, TODAY - timedelta(days=90), TODAY), 'weekday')[1]}")
        head.append(f"Subject: {rng.choice(SUBJECTS)}")
    sign_full = "name" in fields and rng.random() < 0.5
    fields -= {"name"} if sign_full else set()
    body = d.sentences("i", fields)
    body.insert(rng.randint(0, len(body)), rng.choice(REASONS_I))
    sign = d.show("name") if sign_full else d.p.given
    text = f"{rng.choice(GREETINGS)}\n\n{paragraphs(rng, body)}\n\n{rng.choice(SIGNOFFS)}\n{sign}"
    return "\n".join(head) + "\n\n" + text if head else text


@frame("chat", "chat", 2)
def chat_frame(d: Draft) -> str:
    rng = d.rng
    parts = d.sentences("chat")
    if rng.random() < 0.5:
        parts = [unstop(p) for p in parts]
    d.lower = rng.random() < 0.4
    opener = rng.choice(["hey!", "hi 👋", "hello", "", "", "yo", "ok so", "hiya", "good evening!"])
    closer = rng.choice(["", "", "thx!", "cheers", "🙏", "ty", "thanks in advance"])
    return " ".join(x for x in [opener, rng.choice([" ", "\n"]).join(parts), closer] if x)


@frame("chat_log", "chat", 1.5)
def chat_log_frame(d: Draft) -> str:
    rng, fields = d.rng, set(d.fields)
    agent = d.other_given()
    agent_label = rng.choice([f"Agent {agent}", f"{agent} (support)", "Support", "Bot"])
    who = d.show("name") if rng.random() < 0.6 else None
    fields -= {"name"} if who else set()
    msgs = d.sentences("chat", fields) or [rng.choice(REASONS_I)]
    who = who or rng.choice(["Customer", "Visitor", "Guest", "You"])
    cut = rng.randint(1, len(msgs))
    lines = [(who, " ".join(msgs[:cut])), (agent_label, rng.choice(["Thanks! Anything else?", "Let me check.",
                                                                    "Could you confirm a few details?"])),
             (who, " ".join(msgs[cut:]))]
    if rng.random() < 0.5:
        lines.insert(0, (agent_label, f"Hi, I'm {agent}. How can I help?"))
    d.lower = rng.random() < 0.3
    minute = rng.randint(7 * 60, 21 * 60)
    return "\n".join(f"[{(minute + 2 * i) // 60:02d}:{(minute + 2 * i) % 60:02d}] {speaker}: {msg}"
                     for i, (speaker, msg) in enumerate(x for x in lines if x[1]))


@frame("intro", "prose", 2)
def intro_frame(d: Draft) -> str:
    rng = d.rng
    opener = rng.choice(["Hello everyone!", "Hi all,", "A bit about me:", "", "Hello!", "Quick intro:"])
    closer = rng.choice(["Looking forward to it!", "Thanks for having me.", "", "", "Happy to help with anything."])
    return " ".join(x for x in [opener, *d.sentences("i"), closer] if x)


@frame("report", "prose", 2)
def report_frame(d: Draft) -> str:
    prefix = d.rng.choice(["", "", "Summary: ", "Notes: ", "Re: account review. ", "Customer profile: "])
    parts = d.sentences("they")
    parts.insert(d.rng.randint(1, len(parts)), d.rng.choice(REASONS_THEY))
    return prefix + " ".join(parts)


@frame("crm_note", "note", 2)
def crm_note_frame(d: Draft) -> str:
    rng, fields = d.rng, set(d.fields)
    n, agent = rng.randint(1000, 99999), d.other_given()
    header = rng.choice([f"CRM note · ticket #{n}", f"Call summary ({agent})", f"Support log #{n}",
                         f"Case CS-{n}", f"Notes, agent {agent}"])
    if rng.random() < 0.5:
        header += rng.choice([" · ", " — ", "\nCustomer: "]) + d.show("name")
        fields.discard("name")
    parts = d.sentences("they", fields) + [rng.choice(REASONS_THEY)]
    return header + "\n" + (" ".join(parts) if rng.random() < 0.5 else "\n".join(f"- {p}" for p in parts))


@frame("booking", "note", 2)
def booking_frame(d: Draft) -> str:
    rng, fields = d.rng, set(d.fields)
    when = random_date(rng, TODAY, TODAY + timedelta(days=120))  # an appointment date, never the signup
    w, at = write_date(rng, when)[1], some_time(rng)
    what = rng.choice([f"table for {rng.randint(2, 8)}", "haircut", "dental check-up", "onboarding call",
                       "property viewing", "yoga class", "car service", "consultation"])
    d.info["distractors"].append("other_date")
    d.info["steal"]["signup_date"] = when.isoformat()
    header = rng.choice([f"📅 {w}, {at} — {what}", f"Booking confirmed: {what} on {w} at {at}.",
                         f"Appointment: {w}, {at} ({what})"])
    if rng.random() < 0.6:
        header += "\n" + rng.choice(["Guest: ", "Booked by: ", "Name: ", "For: "]) + d.show("name")
        fields.discard("name")
    return header + "\n" + " ".join(d.sentences("they", fields))


def cased(rng, label: str) -> str:
    return rng.choices([label, label.lower(), label.upper()], weights=[80, 12, 8])[0]


@frame("form", "structured", 2)
def form_frame(d: Draft) -> str:
    rng = d.rng
    header = rng.choice(["New registration", f"Form submission #{rng.randint(100, 9999)}", "--- signup form ---",
                         "Web form: contact us", "Profile export", "[Typeform] New response", "", ""])
    sep = rng.choice([": ", ": ", ": ", " - ", " = ", ":\t"])
    lines = [f"{cased(rng, k)}{sep}{v}" for k, v in d.pairs(LABELS)]
    return "\n".join(x for x in [header, *lines] if x)


@frame("csv", "structured", 1)
def csv_frame(d: Draft) -> str:
    rng, delim = d.rng, d.rng.choice([",", ",", ";", "\t", "|"])
    pairs = d.pairs(KEYS, fillers=0.5)

    def cell(v):
        return f'"{v}"' if delim in v or '"' in v else v
    head = rng.choice(["", "", "export.csv", f"users_{rng.randint(2019, 2026)}.csv:", "Row from the CRM export:"])
    table = delim.join(k for k, _ in pairs) + "\n" + delim.join(cell(v) for _, v in pairs)
    return f"{head}\n{table}" if head else table


@frame("table", "structured", 1)
def table_frame(d: Draft) -> str:
    pairs = d.pairs(LABELS)
    if d.rng.random() < 0.5:  # one row under a header row
        return "\n".join(["| " + " | ".join(k for k, _ in pairs) + " |", "|" + "---|" * len(pairs),
                          "| " + " | ".join(v for _, v in pairs) + " |"])
    head = d.rng.choice(["| Field | Value |", "| | |", "| Key | Value |"])
    return "\n".join([head, "|---|---|", *(f"| {k} | {v} |" for k, v in pairs)])


@frame("kv_log", "structured", 1)
def kv_log_frame(d: Draft) -> str:
    rng = d.rng
    when = random_date(rng, TODAY - timedelta(days=30), TODAY)  # the log line's own time: not the signup
    event = rng.choice(["profile_update", "login", "password_reset", "export", "sync", "support_ticket"])
    pairs = d.pairs(KEYS, fillers=0.4)
    kv = " ".join(f'{k}="{v}"' if not re.fullmatch(r"[^\s\"]+", v) else f"{k}={v}" for k, v in pairs)
    level = rng.choice(["INFO", "INFO", "DEBUG", "WARN", "info"])
    return f"{when.isoformat()}T{some_time(rng)}:{rng.randint(10, 59)}Z {level} event={event} {kv}"


@frame("bullets", "structured", 1)
def bullets_frame(d: Draft) -> str:
    rng = d.rng
    title = rng.choice(["New member details:", "Customer info", "Profile", "About the applicant:", "Details:", ""])
    mark = rng.choice(["- ", "* ", "• ", "– "])
    if rng.random() < 0.5:
        lines = [f"{k}: {v}" for k, v in d.pairs(LABELS)]
    else:
        order = [f for f in FIELDS[1:] if f in d.fields]
        rng.shuffle(order)
        lines = [d.show("name")] + [d.frag(f) for f in order] + [f"{f.pair[0]}: {f.pair[1]}" for f in d.take()]
    return "\n".join(x for x in [title, *(mark + line for line in lines)] if x)


@frame("card", "compact", 2)
def card_frame(d: Draft) -> str:
    """One line: 'Contact: Ana Ruiz ana.ruiz@gmail.com, Porto.'"""
    rng = d.rng
    order = [f for f in FIELDS[1:] if f in d.fields]
    rng.shuffle(order)
    bits = [d.frag(f) for f in order]
    others = [f"{f.pair[0].lower()} {f.pair[1]}" for f in d.take()]  # after the person's own facts: no doubt whose
    prefix = rng.choice(["Contact:", "Customer:", "Lead:", "New member:", "Guest:", "Attendee:", "", "", "👤"])
    seps = [rng.choice([", ", " · ", " | ", " – ", "; "]) for _ in bits]
    if seps and rng.random() < 0.3:  # "Ana Ruiz ana@x.com, Porto": a bare space only right after the name
        seps[0] = " "
    line = d.show("name") + "".join(sep + b for sep, b in zip(seps, bits, strict=True))
    line += "".join(rng.choice([" | ", "; ", " · "]) + b for b in others)
    return (f"{prefix} {line}" if prefix else line) + rng.choice([".", "", ""])


@frame("signature", "compact", 2)
def signature_frame(d: Draft) -> str:
    rng = d.rng
    block = [f for f in ("city", "email") if f in d.fields and rng.random() < 0.7]
    body = [rng.choice(REASONS_I)] + d.sentences("i", [f for f in d.fields if f not in block and f != "name"])
    lines, company = [d.show("name")], rng.random() < 0.5
    if company:  # then a bare city line could be the company's: say whose it is
        job = rng.choice(JOBS)
        lines.append(f"{job[0].upper()}{job[1:]} · {rng.choice(COMPANIES).title()}")
    if "city" in block:
        lines.append(d.fill(d.choose(["Based in {city}", "Home: {city}", "Lives in {city}"] if company else
                                     ["📍 {city}", "{city}", "Based in {city}", "Home: {city}"])))
    if "email" in block:
        lines.append(d.fill(d.choose(["✉ {email}", "E: {email}", "{email}", "Email: {email}"])))
    sep = rng.choice(["--", "—", "Best,", "Thanks,", "Regards,"])
    return " ".join(body) + f"\n\n{sep}\n" + "\n".join(lines)


@frame("qa", "structured", 1)
def qa_frame(d: Draft) -> str:
    rng, style = d.rng, d.rng.randrange(3)
    order = list(FIELDS)
    rng.shuffle(order)
    slot = {"name": "name", "age": "age", "city": "city", "email": "email", "signup_date": "date"}
    qa = []
    for f in order:
        if f in d.fields:
            answer = rng.choice(["{}", "{}", "It's {}.", "Sure: {}"]).format("{" + slot[f] + "}")  # "It's {city}."
            qa.append((d.choose(QUESTIONS[f]), d.fill(answer)))
        elif rng.random() < 0.5:
            qa.append((d.choose(QUESTIONS[f]), rng.choice(["n/a", "Rather not say.", "-", "skip", "(no answer)"])))
    qa += [(f"{fact.pair[0]}?", fact.pair[1]) for fact in d.take()]
    fmt = ["Q: {}\nA: {}", "{} {}", "> {}\n{}"][style]
    return "\n".join(fmt.format(q, a) for q, a in qa)


# --- Held out: frames train never sees, so the eval score measures transfer to new shapes.
@frame("voicemail", "chat", 0)
def voicemail_frame(d: Draft) -> str:
    rng = d.rng
    parts = [unstop(p) + rng.choice([",", "...", ", um,", ", uh", ""]) for p in d.sentences("chat")]
    d.lower = rng.random() < 0.5
    return f"Voicemail (0:{rng.randint(12, 59)}), transcript: " + " ".join(parts)


@frame("yaml", "structured", 0)
def yaml_frame(d: Draft) -> str:
    lines = [f"  {k}: {v if v not in FILLERS else '~'}" for k, v in d.pairs(KEYS)]
    return d.rng.choice(["user:", "customer:", "profile:"]) + "\n" + "\n".join(lines)


@frame("review", "prose", 0)
def review_frame(d: Draft) -> str:
    rng = d.rng
    stars = "★" * (k := rng.randint(2, 5)) + "☆" * (5 - k)
    body = d.sentences("i", [f for f in d.fields if f != "name"])
    body.insert(rng.randint(0, len(body)), rng.choice(["Great service overall.", "Support was slow this time.",
                                                       "Does what it says."]))
    title = rng.choice(["Solid app", "Mixed feelings", "Love it"])
    return f"{stars} {title}\n" + " ".join(body) + f"\n— {d.show('name')}"


@frame("handover", "note", 0)
def handover_frame(d: Draft) -> str:
    rng = d.rng
    parts = d.sentences("they") + [rng.choice(REASONS_THEY)]
    return rng.choice(["Shift handover:", "Handover notes (night shift)", "For tomorrow:"]) + "\n" + "\n".join(
        f"• {p}" for p in parts)


def pick_frame(rng, split: str) -> str:
    if split == "eval" and rng.random() < P_EVAL_FRAME:
        return rng.choice([name for name, (_, _, w) in FRAMES.items() if not w])
    names = [name for name, (_, _, w) in FRAMES.items() if w]
    return rng.choices(names, weights=[FRAMES[n][2] for n in names])[0]


# ====================================================================================================
# 9. Render one example, and check it: every gold value must be readable in the text.
# ====================================================================================================
@dataclass
class Example:
    text: str
    target: dict
    info: dict  # how the text was made: frame, phrasings, date format, distractors (tests read this)


def render(rng, split: str) -> Example:
    d = Draft(rng, split, make_person(rng, split))
    name = pick_frame(rng, split)
    writer, family, _ = FRAMES[name]
    d.info.update(frame=name, family=family)
    text = writer(d)
    assert not d.pending, (name, "left a distractor unplaced")
    p = d.p
    target = dict(zip(FIELDS, (p.name, p.age, d.city if p.city else None, p.email,
                               p.signup.isoformat() if p.signup else None), strict=True))
    shown = d.shown
    if p.email and ("email", d.surface["email"]) not in shown:  # only the plain address made it into the text
        d.info.update(email_form="plain", email_text=p.email)
    if d.lower:  # typed in lowercase: the name and the city are golden as written
        text, shown = text.lower(), [(f, s.lower()) for f, s in shown]
        target.update(name=p.name.lower(), city=target["city"] and target["city"].lower())
        d.info.update(date_text=d.info["date_text"] and d.info["date_text"].lower(),
                      email_text=d.info["email_text"] and d.info["email_text"].lower())
        d.info["steal"] = {k: v.lower() if isinstance(v, str) and k != "signup_date" else v
                           for k, v in d.info["steal"].items()}
    d.info["steal"] = {k: v for k, v in d.info["steal"].items() if v != target[k]}
    d.info["lowercase"] = d.lower
    read_back = {"name": lambda s: s.endswith(target["name"]), "age": lambda s: read_age(s) == target["age"],
                 "city": lambda s: s.startswith(target["city"]), "email": lambda s: read_email(s) == target["email"],
                 "signup_date": lambda s: read_date(s).isoformat() == target["signup_date"]}
    for f in FIELDS:
        surfaces = [s for g, s in shown if g == f]
        assert (target[f] is None) == (not surfaces), (name, f, text)
        for s in surfaces:
            assert s in text and read_back[f](s), (name, f, s, target[f], text)
    for f in ("name", "city"):
        assert target[f] is None or target[f] in text, (name, f, text)
    return Example(text, target, d.info)


def make_examples(rng, split: str, n: int, avoid: set = frozenset()) -> list[Example]:
    """n examples with distinct texts, none of which is in `avoid`."""
    examples, seen = [], set(avoid)
    while len(examples) < n:
        ex = render(rng, split)
        if ex.text not in seen:
            seen.add(ex.text)
            examples.append(ex)
    return examples


def dumps(target: dict) -> str:
    return json.dumps(target, ensure_ascii=False)


# ====================================================================================================
# 10. Wrong answers for preference pairs: each is a mistake a base model really makes.
# ====================================================================================================
def can_make(kind: str, ex: Example) -> bool:
    t = ex.target
    if kind == "wrong_type":
        return t["age"] is not None
    if kind == "unnormalised_date":
        return t["signup_date"] is not None and ex.info["date_text"] != t["signup_date"]
    if kind == "hallucinated_value":
        return bool(ex.info["steal"]) or None in t.values()
    return True


def make_rejected(rng, kind: str, ex: Example) -> str:
    t, wrong = ex.target, dict(ex.target)
    if kind == "prose":
        return rng.choice(["Sure! Here is the JSON:\n{}", "Here's the extracted information: {}",
                           "{}\n\nLet me know if you need anything else!",
                           "Based on the text, the person's details are:\n\n{}"]).format(dumps(t))
    if kind == "markdown_fence":
        return rng.choice(["```json\n{}\n```", "```\n{}\n```"]).format(dumps(t))
    if kind == "yaml":
        return "\n".join(f"{k}: {'null' if v is None else v}" for k, v in t.items())
    if kind == "missing_key":  # models most often drop the keys they have nothing for
        nulls = [k for k in FIELDS if t[k] is None]
        del wrong[rng.choice(nulls or list(FIELDS[1:]))]
    elif kind == "wrong_type":
        wrong["age"] = str(t["age"])
    elif kind == "unnormalised_date":
        wrong["signup_date"] = ex.info["date_text"]
    elif kind == "hallucinated_value":
        if ex.info["steal"]:  # a distractor's value taken for the person's
            f = rng.choice(sorted(ex.info["steal"]))
            wrong[f] = ex.info["steal"][f]
        else:  # a null filled in with something plausible
            f = rng.choice([k for k in FIELDS if t[k] is None])
            first, last = t["name"].split()[0], t["name"].split()[-1]
            wrong[f] = {"age": rng.randint(25, 45), "city": rng.choice(CITY_POOL["train"]).name,
                        "email": make_email(rng, first, last),
                        "signup_date": random_date(rng, FIRST_SIGNUP, LAST_SIGNUP).isoformat()}[f]
    return dumps(wrong)


def make_preference(rng, n: int, avoid: set) -> list[Example]:
    examples, seen = [], set(avoid)
    while len(examples) < n:
        kind = ERROR_KINDS[len(examples) % len(ERROR_KINDS)]
        ex = make_examples(rng, "train", 1, seen)[0]
        if not can_make(kind, ex):
            continue
        rejected = make_rejected(rng, kind, ex)
        assert rejected != dumps(ex.target) and score([rejected], [ex.target])["exact_match"] == 0, (kind, rejected)
        ex.info.update(error=kind, rejected=rejected)
        seen.add(ex.text)
        examples.append(ex)
    return examples


# ====================================================================================================
# 11. Prose for continued pre-training (01_full_finetuning): plain paragraphs about the same world, with no
# prompt, no JSON and no chat template. People, cities, dates and e-mail addresses are drawn as above (the
# eval paragraphs from eval's own names and held-out cities), in the many ways this file writes them. A
# model that reads this gets used to how such facts are written: that is all continued pre-training can
# give the task, since it never shows the task itself.
# ====================================================================================================
PROSE = {
    "born": ["{name} was born in {birth_place} in {birth_year}.", "{name} was born on {birthday}.",
             "Born in {birth_place}, {name} grew up there and left at eighteen.",
             "{name} comes from {birth_place}, where {her} parents still live."],
    "age": ["{She} is {age} years old.", "{She} turned {age} this year.", "At {age}, {she} has seen a lot of change.",
            "{She} is now {age_words}."],
    "city": ["Today {she} lives in {city}.", "In {move_year} {she} moved to {city}.",
             "{Her} home is in {city}, a place {she} chose for the work.", "{She} has lived in {city} for {n} years."],
    "job": ["{She} works as {a_job}.", "By trade {she} is {a_job}.", "{She} spent {n} years as {a_job}."],
    "email": ["{Her} e-mail address is {email}.", "Friends write to {her} at {email}.",
              "{She} answers mail sent to {email}.", "The club keeps {email} as {her} contact address."],
    "signup": ["{She} joined the service on {date}.", "{Her} account was opened on {date}.",
               "On {date} {she} signed up, and {she} has used it ever since."],
    "relative": ["{Her} {relative}, {other}, lives in {other_city}.", "{She} often visits {her} {relative} in {other_city}.",
                 "{Her} {relative} {other} is {other_age}."],
    "place": ["{city0} lies in {country}.", "{city0} is a city in {country}.", "Many people in {city0} work in services."],
}


def make_prose(rng, split: str) -> str:
    """One paragraph about one person: their facts in random order, with a relative and a line about a place."""
    p = make_person(rng, split)
    age = p.age or rng.randint(18, 90)
    city = p.city or rng.choice(CITY_POOL["eval_only" if split == "eval" else "train"])
    draft = Draft(rng, split, p)
    job, relative = rng.choice(JOBS), rng.choice(RELATIVES)
    gender = "female" if relative in FEMALE_RELATIVES else "male" if relative in MALE_RELATIVES else None
    birthday = random_date(rng, date(TODAY.year - age - 1, TODAY.month, 2), date(TODAY.year - age, TODAY.month, 1))
    values = {
        "name": p.name, "She": "She" if p.she else "He", "she": "she" if p.she else "he",
        "Her": "Her" if p.she else "His", "her": "her" if p.she else "his", "age": str(age),
        "age_words": age_in_words(age) if age < 100 else str(age), "city": write_city(rng, city)[1],
        "city0": city.name, "country": city.country, "birth_place": draft.other_city(),
        "birth_year": str(birthday.year), "move_year": str(rng.randint(TODAY.year - 20, TODAY.year - 1)),
        "birthday": write_date(rng, birthday)[1],
        "a_job": ("an " if job[0] in "aeiou" else "a ") + job, "n": str(rng.randint(2, 15)),
        "email": p.email or make_email(rng, p.given, p.family),
        "date": write_date(rng, p.signup or random_date(rng, FIRST_SIGNUP, LAST_SIGNUP))[1],
        "relative": relative, "other": f"{draft.other_given(gender)} {draft.other_name().split()[-1]}",
        "other_city": draft.other_city(),
        "other_age": str(rng.randint(18, 90)),
    }
    topics = ["born", "age", "city", "job", "email", "signup", "relative"]
    chosen = ["born"] + rng.sample(topics[1:], rng.randint(3, 6)) + (["place"] if rng.random() < 0.5 else [])
    return " ".join(SLOT.sub(lambda m: values[m[1]], rng.choice(PROSE[topic])) for topic in chosen)

# ====================================================================================================
# 12. The second task (07_model_merging): the same people's JSON records -> one sentence that states each
# fact. The record is the gold answer of an extraction example (train records for train, eval's for eval),
# so the two tasks share their people and differ only in the skill. The sentence is composed, not templated:
# a few ways to say each fact, in the record's order or shuffled, joined as English joins a list.
# ====================================================================================================
DESCRIBE = {
    "age": ["is {age}", "is {age} years old", "is aged {age}", "is {age} years of age"],
    "city": ["lives in {city}", "is based in {city}", "is from {city}", "lives in {city}", "calls {city} home"],
    "email": ["can be reached at {email}", "uses the e-mail address {email}", "has the e-mail {email}",
              "writes from {email}", "gets mail at {email}"],
    "signup_date": ["signed up on {date}", "joined on {date}", "registered on {date}", "created an account on {date}",
                    "has been a member since {date}"],
}
APPOSITIVE_AGE = ["{name}, {age},", "{name}, aged {age},", "{name} ({age})"]
NAME_ONLY = ["{name} is on record, with no other details.", "The record gives only the name: {name}.",
             "All that is known is the name, {name}."]


def describe(rng, record: dict) -> str:
    """One sentence stating every non-null field of `record` (the date written out), and nothing else."""
    values = {"name": record["name"], "age": record["age"], "city": record["city"], "email": record["email"],
              "date": date_in_words(record["signup_date"]) if record["signup_date"] else None}
    facts = [f for f in FIELDS[1:] if record[f] is not None]
    if not facts:
        return rng.choice(NAME_ONLY).format(**values)
    subject = "{name}"
    if "age" in facts and len(facts) > 1 and rng.random() < 0.4:  # "Ana Ruiz, 34, lives in ..."
        subject = rng.choice(APPOSITIVE_AGE)
        facts.remove("age")
    if rng.random() < 0.3:
        rng.shuffle(facts)
    clauses = [rng.choice(DESCRIBE[f]) for f in facts]
    listed = clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]
    return f"{subject} {listed}.".format(**values)


def make_describe(rng, examples: list[Example], n: int) -> list[Example]:
    """The first n extraction examples' records, each as a describe example: its JSON in, one sentence out."""
    return [Example(text=dumps(ex.target), target=ex.target, info={"sentence": describe(rng, ex.target)})
            for ex in examples[:n]]


def build(seed: int = 0, sizes: dict | None = None) -> dict[str, list[Example]]:
    """All eight splits. Each has its own random stream, so resizing one split leaves the others alone."""
    sizes = {**DEFAULT_SIZES, **(sizes or {})}

    def stream(name):
        return random.Random(f"{seed}:{name}")  # a str seed is hashed with sha512: stable across runs

    train = make_examples(stream("sft_train"), "train", sizes["sft_train"])
    train_texts = {ex.text for ex in train}
    built = {
        "sft_train": train,
        "sft_eval": make_examples(stream("sft_eval"), "eval", sizes["sft_eval"]),
        "preference": make_preference(stream("preference"), sizes["preference"], train_texts),
        "rl_prompts": make_examples(stream("rl_prompts"), "train", sizes["rl_prompts"], train_texts),
    }
    prose_rng = stream("prose_train")
    built["prose_train"] = [make_prose(prose_rng, "train") for _ in range(sizes["prose_train"])]
    prose_rng = stream("prose_eval")
    built["prose_eval"] = [make_prose(prose_rng, "eval") for _ in range(sizes["prose_eval"])]
    built["describe_train"] = make_describe(stream("describe_train"), train, sizes["describe_train"])
    built["describe_eval"] = make_describe(stream("describe_eval"), built["sft_eval"], sizes["describe_eval"])
    assert not train_texts & {ex.text for ex in built["sft_eval"]}, "eval shares a text with train"
    assert not train_texts & {ex.text for ex in built["rl_prompts"]}, "an RL prompt copies a train text"
    return built


def to_record(split: str, ex: Example | str) -> dict:
    """The JSON line for one example, in the format TRL reads for that kind of training."""
    if split.startswith("prose"):
        return {"text": ex}  # plain text: what causal-LM (continued pre-training) datasets hold
    if split.startswith("describe"):
        return {"messages": describe_messages(ex.text) + [{"role": "assistant", "content": ex.info["sentence"]}]}
    answer = {"role": "assistant", "content": dumps(ex.target)}
    if split in ("sft_train", "sft_eval"):
        return as_sft(ex.text, ex.target)  # the same form ftlab.data gives the hand-written eval set
    if split == "preference":
        return {"prompt": prompt_messages(ex.text), "chosen": [answer],
                "rejected": [{"role": "assistant", "content": ex.info["rejected"]}], "error": ex.info["error"]}
    return {"prompt": prompt_messages(ex.text), "answer": dumps(ex.target)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    for flag, split in (("--train", "sft_train"), ("--eval", "sft_eval"), ("--preference", "preference"),
                        ("--rl", "rl_prompts"),
                        ("--prose", "prose_train"), ("--prose-eval", "prose_eval"),
                        ("--describe", "describe_train"), ("--describe-eval", "describe_eval")):
        parser.add_argument(flag, type=int, default=DEFAULT_SIZES[split], dest=split,
                            help=f"lines in {split}.jsonl (default {DEFAULT_SIZES[split]})")
    args = parser.parse_args(argv)
    built = build(args.seed, {split: getattr(args, split) for split in DEFAULT_SIZES})
    args.out.mkdir(parents=True, exist_ok=True)
    for split, examples in built.items():
        path = args.out / f"{split}.jsonl"
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(json.dumps(to_record(split, ex), ensure_ascii=False) + "\n" for ex in examples)
        print(f"{len(examples):4d} lines -> {path}")


if __name__ == "__main__":
    main()
